build/src/model.o: src/model.c src/model.h include/inferd.h src/gguf.h \
 src/util.h src/safetensors.h src/backend.h src/dtype.h
src/model.h:
include/inferd.h:
src/gguf.h:
src/util.h:
src/safetensors.h:
src/backend.h:
src/dtype.h:
