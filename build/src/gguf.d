build/src/gguf.o: src/gguf.c src/gguf.h src/util.h include/inferd.h \
 src/dtype.h
src/gguf.h:
src/util.h:
include/inferd.h:
src/dtype.h:
