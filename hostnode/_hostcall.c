/* The reducer call's two crossings between Python and wasmtime, in C (``make native``).
 *
 * ``hostnode/wasm_host.py`` reaches wasmtime's C API through ctypes. Two of its crossings run
 * many times per reducer call and cost more through ctypes than the work they carry:
 *
 *  - each host import the guest calls enters Python through a ctypes callback (libffi's
 *    closure, an argument tuple unpacked from the raw slots with ``struct``, a memoryview store
 *    for the result): ~1,300 instructions a call, 17 calls per ``transfer``;
 *  - starting the call (set the fuel, start the async call, poll it, delete the future, read
 *    the fuel left) is five ctypes calls, ~2,000 instructions each.
 *
 * Here a host import is a ``HostFunc``: wasmtime calls ``trampoline`` with the ``HostFunc`` as
 * its environment, which calls the import's Python implementation with the same tuple of ints
 * the ctypes callback builds; ``run`` makes the five calls in one. wasmtime's functions are
 * given as addresses (``bind``, from the library wasmtime-py loads), so nothing here links
 * against wasmtime. Without this module (no C compiler, ``NATIVE=0``) wasm_host keeps the ctypes
 * route, which does the same.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef void *(*set_fuel_fn)(void *ctx, uint64_t fuel);
typedef void *(*get_fuel_fn)(void *ctx, uint64_t *out);
typedef void *(*call_async_fn)(void *ctx, const void *func, const void *args, size_t nargs, void *results,
                               size_t nresults, void *trap_out, void *error_out);
typedef bool (*poll_fn)(void *future);
typedef void (*delete_fn)(void *future);
typedef void *(*trap_new_fn)(const char *message, size_t len);

static struct {
    set_fuel_fn set_fuel;
    get_fuel_fn get_fuel;
    call_async_fn call_async;
    poll_fn poll;
    delete_fn delete_future;
    trap_new_fn trap_new;
} api;

/* wasmtime_val_raw_t: a 16-byte union; i32 values in the low 4 bytes, i64 in the low 8. */
#define SLOT 16

enum { NO_RESULT = 0, U32_RESULT = 1, I64_RESULT = 2 };

typedef struct {
    PyObject_HEAD
    PyObject *impl;     /* impl(args: tuple[int, ...]) -> int | None */
    PyObject *on_error; /* on_error(exc) -> address of a wasm_trap_t for the guest */
    PyObject *profile;  /* a list of one item: None, or [ns, calls] to add U32_RESULT calls to */
    int nparams;
    int kind;
} HostFunc;

static int add_to_item(PyObject *list, Py_ssize_t i, long long n) {
    PyObject *add = PyLong_FromLongLong(n);
    if (add == NULL) return -1;
    PyObject *sum = PyNumber_Add(PyList_GET_ITEM(list, i), add);
    Py_DECREF(add);
    if (sum == NULL) return -1;
    return PyList_SetItem(list, i, sum);
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The import's failure as a trap: on_error records the exception for the host and builds the
 * trap; if even that fails, a plain trap (the guest must not run on). */
static void *fail(HostFunc *f) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    void *trap = NULL;
    if (value != NULL) {
        PyObject *t = PyObject_CallOneArg(f->on_error, value);
        if (t != NULL) {
            trap = PyLong_AsVoidPtr(t);
            Py_DECREF(t);
        }
    }
    PyErr_Clear();
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (trap == NULL) {
        static const char message[] = "host error: the import failed and its failure could not be reported";
        trap = api.trap_new(message, sizeof message - 1);
    }
    return trap;
}

/* wasmtime_func_unchecked_callback_t */
static void *trampoline(void *env, void *caller, unsigned char *slots, size_t nslots) {
    (void)caller;
    (void)nslots;
    HostFunc *f = (HostFunc *)env;
    PyGILState_STATE gil = PyGILState_Ensure();
    void *trap = NULL;
    PyObject *args = PyTuple_New(f->nparams);
    if (args == NULL) {
        trap = fail(f);
        goto done;
    }
    for (int i = 0; i < f->nparams; i++) {
        const unsigned char *slot = slots + (size_t)i * SLOT;
        PyObject *v;
        if (f->kind == I64_RESULT) {
            int64_t x;
            memcpy(&x, slot, 8);
            v = PyLong_FromLongLong(x);
        } else {
            uint32_t x;
            memcpy(&x, slot, 4);
            v = PyLong_FromUnsignedLong(x);
        }
        if (v == NULL) {
            Py_DECREF(args);
            trap = fail(f);
            goto done;
        }
        PyTuple_SET_ITEM(args, i, v);
    }
    PyObject *profile = f->kind == U32_RESULT ? PyList_GET_ITEM(f->profile, 0) : Py_None;
    long long t0 = profile != Py_None ? now_ns() : 0;
    PyObject *r = PyObject_CallOneArg(f->impl, args);
    Py_DECREF(args);
    if (r == NULL) {
        trap = fail(f);
        goto done;
    }
    if (f->kind == U32_RESULT) {
        unsigned long x = PyLong_AsUnsignedLong(r);
        if (x == (unsigned long)-1 && PyErr_Occurred()) {
            Py_DECREF(r);
            trap = fail(f);
            goto done;
        }
        if (x > 0xFFFFFFFFUL) {
            Py_DECREF(r);
            PyErr_Format(PyExc_OverflowError, "host import returned %lu, past an i32 result", x);
            trap = fail(f);
            goto done;
        }
        uint32_t v = (uint32_t)x;
        memcpy(slots, &v, 4);
        if (profile != Py_None) {
            /* profile may have been swapped by the import itself: read it again */
            PyObject *p = PyList_GET_ITEM(f->profile, 0);
            if (PyList_Check(p) && PyList_GET_SIZE(p) >= 2) {
                if (add_to_item(p, 0, now_ns() - t0) < 0 || add_to_item(p, 1, 1) < 0) PyErr_Clear();
            }
        }
    } else if (f->kind == I64_RESULT) {
        long long x = PyLong_AsLongLong(r);
        if (x == -1 && PyErr_Occurred()) {
            Py_DECREF(r);
            trap = fail(f);
            goto done;
        }
        int64_t v = x;
        memcpy(slots, &v, 8);
    }
    Py_DECREF(r);
done:
    PyGILState_Release(gil);
    return trap;
}

static PyObject *HostFunc_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *names[] = {"impl", "nparams", "kind", "on_error", "profile", NULL};
    PyObject *impl, *on_error, *profile;
    int nparams, kind;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OiiOO!", names, &impl, &nparams, &kind, &on_error, &PyList_Type,
                                     &profile))
        return NULL;
    if (nparams < 0 || kind < NO_RESULT || kind > I64_RESULT || PyList_GET_SIZE(profile) != 1) {
        PyErr_SetString(PyExc_ValueError, "HostFunc: nparams >= 0, kind 0/1/2, profile a list of one item");
        return NULL;
    }
    HostFunc *self = (HostFunc *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(impl);
    Py_INCREF(on_error);
    Py_INCREF(profile);
    self->impl = impl;
    self->on_error = on_error;
    self->profile = profile;
    self->nparams = nparams;
    self->kind = kind;
    return (PyObject *)self;
}

static int HostFunc_traverse(HostFunc *self, visitproc visit, void *arg) {
    Py_VISIT(self->impl);
    Py_VISIT(self->on_error);
    Py_VISIT(self->profile);
    return 0;
}

static int HostFunc_clear(HostFunc *self) {
    Py_CLEAR(self->impl);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->profile);
    return 0;
}

static void HostFunc_dealloc(HostFunc *self) {
    PyObject_GC_UnTrack(self);
    HostFunc_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *HostFunc_env(HostFunc *self, void *closure) {
    (void)closure;
    return PyLong_FromVoidPtr(self);
}

static PyObject *HostFunc_callback(HostFunc *self, void *closure) {
    (void)self;
    (void)closure;
    return PyLong_FromVoidPtr((void *)trampoline);
}

static PyGetSetDef HostFunc_getset[] = {
    {"env", (getter)HostFunc_env, NULL, "the environment to give wasmtime (this object's address)", NULL},
    {"callback", (getter)HostFunc_callback, NULL, "the wasmtime_func_unchecked_callback_t's address", NULL},
    {NULL},
};

static PyTypeObject HostFuncType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hostnode._hostcall.HostFunc",
    .tp_basicsize = sizeof(HostFunc),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "HostFunc(impl, nparams, kind, on_error, profile): one host import for wasmtime to call.\n\n"
              "The object must outlive every store that can call it (wasmtime keeps its address).",
    .tp_new = HostFunc_new,
    .tp_traverse = (traverseproc)HostFunc_traverse,
    .tp_clear = (inquiry)HostFunc_clear,
    .tp_dealloc = (destructor)HostFunc_dealloc,
    .tp_getset = HostFunc_getset,
};

static bool bound(void) {
    if (api.call_async == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hostnode._hostcall.bind() was not called");
        return false;
    }
    return true;
}

static PyObject *bind(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *a[6];
    if (!PyArg_ParseTuple(args, "OOOOOO", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5])) return NULL;
    void *p[6];
    for (int i = 0; i < 6; i++) {
        p[i] = PyLong_AsVoidPtr(a[i]);
        if (p[i] == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bind: a function address is 0");
            return NULL;
        }
    }
    api.set_fuel = (set_fuel_fn)p[0];
    api.get_fuel = (get_fuel_fn)p[1];
    api.call_async = (call_async_fn)p[2];
    api.poll = (poll_fn)p[3];
    api.delete_future = (delete_fn)p[4];
    api.trap_new = (trap_new_fn)p[5];
    Py_RETURN_NONE;
}

/* run(ctx, func, args, nargs, results, nresults, trap_out, error_out, fuel) -> (future, fuel_left)
 * Set the fuel, start the call and run its first slice. Finished: the future is deleted and
 * (0, fuel left) returned. Not finished: (the future's address, 0); the caller runs the rest
 * and deletes it. The GIL stays held (host imports run on this thread). */
static PyObject *run(PyObject *module, PyObject *const *argv, Py_ssize_t argc) {
    (void)module;
    if (argc != 9) {
        PyErr_SetString(PyExc_TypeError, "run takes 9 arguments");
        return NULL;
    }
    if (!bound()) return NULL;
    void *p[8];
    for (int i = 0; i < 8; i++) {
        if (i == 3 || i == 5) continue;
        p[i] = PyLong_AsVoidPtr(argv[i]);
        if (p[i] == NULL && PyErr_Occurred()) return NULL;
    }
    size_t nargs = PyLong_AsSize_t(argv[3]);
    size_t nresults = PyLong_AsSize_t(argv[5]);
    unsigned long long fuel = PyLong_AsUnsignedLongLong(argv[8]);
    if (PyErr_Occurred()) return NULL;
    if (api.set_fuel(p[0], fuel) != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "wasmtime_context_set_fuel failed (is fuel metering on?)");
        return NULL;
    }
    void *future = api.call_async(p[0], p[1], p[2], nargs, p[4], nresults, p[6], p[7]);
    if (!api.poll(future)) return Py_BuildValue("(KK)", (unsigned long long)(uintptr_t)future, 0ULL);
    api.delete_future(future);
    uint64_t left = 0;
    if (api.get_fuel(p[0], &left) != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "wasmtime_context_get_fuel failed");
        return NULL;
    }
    return Py_BuildValue("(KK)", 0ULL, (unsigned long long)left);
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS,
     "bind(set_fuel, get_fuel, func_call_async, call_future_poll, call_future_delete, trap_new): "
     "wasmtime's functions, as addresses"},
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(ctx, func, args, nargs, results, nresults, trap_out, error_out, fuel) -> (future, fuel_left)"},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hostnode._hostcall",
    .m_doc = "Host imports and reducer calls into wasmtime without ctypes.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__hostcall(void) {
    if (PyType_Ready(&HostFuncType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    Py_INCREF(&HostFuncType);
    if (PyModule_AddObject(m, "HostFunc", (PyObject *)&HostFuncType) < 0) {
        Py_DECREF(&HostFuncType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "NO_RESULT", NO_RESULT) < 0 || PyModule_AddIntConstant(m, "U32_RESULT", U32_RESULT) < 0 ||
        PyModule_AddIntConstant(m, "I64_RESULT", I64_RESULT) < 0)
        return NULL;
    return m;
}
