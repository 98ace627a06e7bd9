build/src/sample.o: src/sample.c src/sample.h
src/sample.h:
