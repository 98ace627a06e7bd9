build/src/safetensors.o: src/safetensors.c src/safetensors.h src/util.h \
 include/inferd.h src/dtype.h
src/safetensors.h:
src/util.h:
include/inferd.h:
src/dtype.h:
