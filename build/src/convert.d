build/src/convert.o: src/convert.c src/model.h include/inferd.h \
 src/gguf.h src/util.h src/safetensors.h src/dtype.h
src/model.h:
include/inferd.h:
src/gguf.h:
src/util.h:
src/safetensors.h:
src/dtype.h:
