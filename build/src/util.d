build/src/util.o: src/util.c src/util.h include/inferd.h
src/util.h:
include/inferd.h:
