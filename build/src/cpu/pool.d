build/src/cpu/pool.o: src/cpu/pool.c src/cpu/pool.h
src/cpu/pool.h:
