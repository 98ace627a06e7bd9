build/src/forward.o: src/forward.c src/backend.h src/model.h \
 include/inferd.h src/gguf.h src/util.h src/safetensors.h
src/backend.h:
src/model.h:
include/inferd.h:
src/gguf.h:
src/util.h:
src/safetensors.h:
