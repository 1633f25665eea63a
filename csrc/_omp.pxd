# OpenMP shims that compile (as serial fallbacks) without OpenMP,
# in the manner of scikit-learn's _openmp_helpers.pxd.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTRNN_OMP_ENABLED 1
    static inline int fastrnn_omp_max_threads(void) { return omp_get_max_threads(); }
    static inline int fastrnn_omp_thread_id(void) { return omp_get_thread_num(); }
    static inline int fastrnn_omp_num_threads(void) { return omp_get_num_threads(); }
    #else
    #define FASTRNN_OMP_ENABLED 0
    static inline int fastrnn_omp_max_threads(void) { return 1; }
    static inline int fastrnn_omp_thread_id(void) { return 0; }
    static inline int fastrnn_omp_num_threads(void) { return 1; }
    #endif
    """
    int FASTRNN_OMP_ENABLED
    int fastrnn_omp_max_threads() noexcept nogil
    int fastrnn_omp_thread_id() noexcept nogil
    int fastrnn_omp_num_threads() noexcept nogil
