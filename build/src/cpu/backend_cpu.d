build/src/cpu/backend_cpu.o: src/cpu/backend_cpu.c src/backend.h \
 src/model.h include/inferd.h src/gguf.h src/util.h src/safetensors.h \
 src/dtype.h src/cpu/ops.h src/cpu/pool.h
src/backend.h:
src/model.h:
include/inferd.h:
src/gguf.h:
src/util.h:
src/safetensors.h:
src/dtype.h:
src/cpu/ops.h:
src/cpu/pool.h:
