build/tools/inferd.o: tools/inferd.c include/inferd.h src/sample.h
include/inferd.h:
src/sample.h:
