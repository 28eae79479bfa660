/* Point reads and writes of the database's writer thread that keep the GIL (``make native``).
 *
 * py-lmdb releases the GIL around every LMDB call (``Transaction.get``, ``put``, …) so that
 * page faults and long operations do not stall other threads. For the writer thread of a host
 * node that is the wrong trade: a point ``get`` takes about a microsecond, and whenever another
 * thread is waiting for the GIL (the node's event loop, under load always) each release wakes it
 * with a futex signal and each re-take may wait behind it. Profiled in the split standalone
 * server at 64 × 40, a ``transfer``'s LMDB reads and writes spent more in those two steps than
 * in LMDB (loadtest/RESULTS.md, session 18).
 *
 * ``get`` and ``put`` here make the same LMDB calls through the engine table py-lmdb itself uses
 * (the ``libv`` of the transaction), holding the GIL. They read py-lmdb's Transaction and
 * _Database objects through a copy of their layout, so ``check`` must accept the installed
 * py-lmdb first: ``hostnode/lmdbfast.py`` compares the objects' sizes and the pointers they hold
 * with what they must be, and the results with py-lmdb's own calls, before it uses this module;
 * otherwise the datastore keeps calling py-lmdb. Anything unusual (an invalid transaction, a
 * database of another environment, an LMDB error) is left to py-lmdb, which raises as it does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* LMDB's own types, as its lmdb.h defines them (0.9.x, which py-lmdb bundles). */
typedef struct {
    size_t mv_size;
    void *mv_data;
} Val;
typedef unsigned int Dbi;
typedef int (*get_fn)(void *txn, Dbi dbi, Val *key, Val *data);
typedef int (*put_fn)(void *txn, Dbi dbi, Val *key, Val *data, unsigned int flags);
typedef size_t (*txn_id_fn)(void *txn);
#define NOTFOUND (-30798) /* MDB_NOTFOUND */

/* The head of py-lmdb's engine table (lmdb/mdb_api.h, py-lmdb 3.0): the engine's version,
 * then its entry points in order; we use txn_id, get and put. */
typedef struct {
    int major, minor, patch;
    unsigned int data_version;
    void *env_fns[20];
    void *txn_begin, *txn_commit, *txn_abort, *txn_reset, *txn_renew;
    txn_id_fn txn_id;
    void *dbi_open, *dbi_flags, *dbi_close, *drop;
    get_fn get;
    put_fn put;
} Engine;

/* py-lmdb 3.0's object layouts (lmdb/cpython.c, built without memsink). */
typedef struct {
    void *prev, *next;
} ListHead;
#define LMDB_HEAD \
    PyObject_HEAD ListHead siblings; \
    ListHead children; \
    int valid;

typedef struct {
    LMDB_HEAD
    PyObject *weaklist;
    void *env;
    const Engine *libv;
} EnvView;

typedef struct {
    LMDB_HEAD
    void *env;
    Dbi dbi;
    unsigned int flags;
} DbView;

typedef struct {
    LMDB_HEAD
    PyObject *weaklist;
    void *env;
    void *parent;
    const Engine *libv;
    void *txn;
    int flags;
    void *db;
    int mutations;
} TransView;

static PyTypeObject *trans_type; /* lmdb.Transaction, set by check */
static PyTypeObject *db_type;    /* lmdb._Database */

/* Whether txn and db are what the fast path can serve; otherwise the caller asks py-lmdb. */
static inline int usable(PyObject *txn, PyObject *db) {
    if (Py_TYPE(txn) != trans_type || Py_TYPE(db) != db_type) return 0;
    TransView *t = (TransView *)txn;
    DbView *d = (DbView *)db;
    return t->valid && d->valid && t->txn != NULL && d->env == t->env;
}

static PyObject *fallback_get(PyObject *txn, PyObject *key, PyObject *db) {
    return PyObject_CallMethod(txn, "get", "OOO", key, Py_None, db);
}

/* get(txn, key: bytes, db) -> bytes | None: txn.get(key, None, db). */
static PyObject *get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "get(txn, key, db) takes three arguments");
        return NULL;
    }
    PyObject *txn = args[0], *key = args[1], *db = args[2];
    if (trans_type == NULL || !PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) == 0 || !usable(txn, db))
        return fallback_get(txn, key, db);
    TransView *t = (TransView *)txn;
    Val k = {(size_t)PyBytes_GET_SIZE(key), PyBytes_AS_STRING(key)};
    Val v;
    int rc = t->libv->get(t->txn, ((DbView *)db)->dbi, &k, &v);
    if (rc == 0) return PyBytes_FromStringAndSize(v.mv_data, (Py_ssize_t)v.mv_size);
    if (rc == NOTFOUND) Py_RETURN_NONE;
    return fallback_get(txn, key, db); /* py-lmdb raises the error it names */
}

/* put(txn, key: bytes, value: bytes, db) -> True: txn.put(key, value, True, True, False, db). */
static PyObject *put(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "put(txn, key, value, db) takes four arguments");
        return NULL;
    }
    PyObject *txn = args[0], *key = args[1], *value = args[2], *db = args[3];
    if (trans_type != NULL && PyBytes_CheckExact(key) && PyBytes_GET_SIZE(key) > 0 && PyBytes_CheckExact(value)
        && usable(txn, db)) {
        TransView *t = (TransView *)txn;
        Val k = {(size_t)PyBytes_GET_SIZE(key), PyBytes_AS_STRING(key)};
        Val v = {(size_t)PyBytes_GET_SIZE(value), PyBytes_AS_STRING(value)};
        t->mutations++; /* as py-lmdb does: its cursors re-read after a write */
        if (t->libv->put(t->txn, ((DbView *)db)->dbi, &k, &v, 0) == 0) Py_RETURN_TRUE;
        /* An error leaves the transaction failed; py-lmdb's put reports it. */
    }
    return PyObject_CallMethod(txn, "put", "OOOOOO", key, value, Py_True, Py_True, Py_False, db);
}

/* check(env, txn, db) -> str: "" when the layout above matches these objects of the installed
 * py-lmdb (and the fast path is then enabled), else what does not match. ``txn`` must be a
 * top-level write transaction of ``env`` and ``db`` a database of it. */
static PyObject *check(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *env, *txn, *db;
    if (!PyArg_ParseTuple(args, "OOO", &env, &txn, &db)) return NULL;
    if (Py_TYPE(env)->tp_basicsize < (Py_ssize_t)sizeof(EnvView))
        return PyUnicode_FromString("the Environment object is smaller than expected");
    if (Py_TYPE(txn)->tp_basicsize != (Py_ssize_t)sizeof(TransView))
        return PyUnicode_FromFormat("the Transaction object has %zd bytes, not %zd", Py_TYPE(txn)->tp_basicsize,
                                    (Py_ssize_t)sizeof(TransView));
    if (Py_TYPE(db)->tp_basicsize != (Py_ssize_t)sizeof(DbView))
        return PyUnicode_FromFormat("the _Database object has %zd bytes, not %zd", Py_TYPE(db)->tp_basicsize,
                                    (Py_ssize_t)sizeof(DbView));
    TransView *t = (TransView *)txn;
    DbView *d = (DbView *)db;
    EnvView *e = (EnvView *)env;
    if (t->env != (void *)env || d->env != (void *)env)
        return PyUnicode_FromString("the transaction or database does not point at its environment");
    if (t->parent != NULL || t->libv == NULL || t->libv != e->libv || t->txn == NULL || !t->valid)
        return PyUnicode_FromString("the transaction's engine or handle is not where expected");
    if (t->libv->major != 0 || t->libv->minor != 9)
        return PyUnicode_FromFormat("the LMDB engine is %d.%d, not 0.9", t->libv->major, t->libv->minor);
    PyObject *id = PyObject_CallMethod(txn, "id", NULL);
    if (id == NULL) return NULL;
    size_t expected = PyLong_AsSize_t(id);
    Py_DECREF(id);
    if (expected == (size_t)-1 && PyErr_Occurred()) return NULL;
    if (t->libv->txn_id(t->txn) != expected) return PyUnicode_FromString("the engine's txn_id disagrees with txn.id()");
    trans_type = Py_TYPE(txn);
    db_type = Py_TYPE(db);
    return PyUnicode_FromString("");
}

static PyMethodDef methods[] = {
    {"get", (PyCFunction)(void (*)(void))get, METH_FASTCALL, "txn.get(key, None, db), keeping the GIL."},
    {"put", (PyCFunction)(void (*)(void))put, METH_FASTCALL,
     "txn.put(key, value, True, True, False, db), keeping the GIL."},
    {"check", check, METH_VARARGS, "Accept the installed py-lmdb's layout: '' if it matches, else why not."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lmdbfast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__lmdbfast(void) { return PyModule_Create(&module); }
