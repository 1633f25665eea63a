cdef extern from "_fpmode.h" nogil:
    ctypedef unsigned long long fastrnn_fpmode_t
    fastrnn_fpmode_t fastrnn_ftz_on() noexcept
    void fastrnn_fp_restore(fastrnn_fpmode_t old) noexcept
    fastrnn_fpmode_t fastrnn_fp_get() noexcept
    int FASTRNN_HAVE_FTZ
