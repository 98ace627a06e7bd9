build/src/config.o: src/config.c src/model.h include/inferd.h src/gguf.h \
 src/util.h src/safetensors.h
src/model.h:
include/inferd.h:
src/gguf.h:
src/util.h:
src/safetensors.h:
