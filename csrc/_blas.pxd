# Row-major BLAS wrappers over scipy.linalg.cython_blas, fused over float/double.
#
# BLAS is column-major; a row-major (M, N) matrix with leading dimension ld is
# the column-major (N, M) matrix with the same ld, i.e. its transpose. So the
# row-major product C = op(A) @ op(B) is the column-major C^T = op(B)^T op(A)^T:
# the wrappers swap the operands and pass the same transpose flags.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm(char transa, char transb, int M, int N, int K,
                      floating alpha, const floating* A, int lda,
                      const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """C(M, N) = alpha * op(A)(M, K) @ op(B)(K, N) + beta * C, row-major."""
    if M <= 0 or N <= 0:
        return
    if floating is float:
        sgemm(&transb, &transa, &N, &M, &K, &alpha, <float*>B, &ldb,
              <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&transb, &transa, &N, &M, &K, &alpha, <double*>B, &ldb,
              <double*>A, &lda, &beta, C, &ldc)

