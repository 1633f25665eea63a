/* GCC/Clang vector types of 64, 32 and 16 bytes, shared by the packed micro-kernels
 * (csrc/_pgemm.h) and the bias/scatter pass (csrc/_elementwise.h); each compiled
 * variant splits them into whatever its registers hold. */
#ifndef FASTRNN_VECTYPES_H
#define FASTRNN_VECTYPES_H

#if defined(__GNUC__)
typedef float fastrnn_v16f __attribute__((vector_size(64)));
typedef float fastrnn_v8f __attribute__((vector_size(32)));
typedef float fastrnn_v4f __attribute__((vector_size(16)));
typedef double fastrnn_v8d __attribute__((vector_size(64)));
typedef double fastrnn_v4d __attribute__((vector_size(32)));
typedef double fastrnn_v2d __attribute__((vector_size(16)));
#endif

#endif
