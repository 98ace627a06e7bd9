build/src/dtype.o: src/dtype.c src/dtype.h
src/dtype.h:
