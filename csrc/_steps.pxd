# The step-claiming protocol of csrc/_steps.h, shared by fastrnn._rnn (B = 1
# training) and fastrnn._lm (generation).
cdef extern from "_steps.h" nogil:
    ctypedef struct fastrnn_steps_t:
        pass
    void fastrnn_steps_init(fastrnn_steps_t* s) noexcept
    int fastrnn_steps_claim(fastrnn_steps_t* s, int k, int t) noexcept
    void fastrnn_steps_done(fastrnn_steps_t* s, int k, int t) noexcept
    int fastrnn_steps_next(fastrnn_steps_t* s, int t) noexcept
    void fastrnn_steps_wait(fastrnn_steps_t* s, int t) noexcept
    Py_ssize_t fastrnn_split_point(Py_ssize_t H) noexcept
