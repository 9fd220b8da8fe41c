/* The inner loops of monitor/identity.py in C: the same values as its Python code, which
 * stays the reference (tests/test_speedups.py holds the two equal) and the fallback where
 * no C compiler built this (setup.py marks the extension optional).
 *
 * A set of 64-bit hashes (a text's shingles, its content words) is here a "packed set":
 * bytes holding the distinct values in ascending order, 8 bytes each in this machine's
 * order. It is made, sent through a pipe, compared and freed as one object, where a
 * frozenset costs an int object and a hash-table slot per value.
 *   hash64(text)                   identity._py_hash64: blake2b, 8 bytes, as a signed int
 *   word_sets(words, table)        identity._py_shingle_hashes and _content_words, packed
 *   band_keys(packed, bands, rows) identity._py_band_keys
 *   shared(a, b)                   len(a & b) of two packed sets
 *   pack(ints)                     the packed set of an iterable of ints
 * BLAKE2b is RFC 7693's, unkeyed, for inputs below 2**64 bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static const uint64_t IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

/* The message schedule of rounds 0-9; rounds 10 and 11 take rows 0 and 1 again. */
static const uint8_t SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64le(const uint8_t *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static inline uint64_t load64be(const uint8_t *p) {
    return (uint64_t)p[7] | (uint64_t)p[6] << 8 | (uint64_t)p[5] << 16 | (uint64_t)p[4] << 24 |
           (uint64_t)p[3] << 32 | (uint64_t)p[2] << 40 | (uint64_t)p[1] << 48 | (uint64_t)p[0] << 56;
}

/* A digest word read the way Python reads the digest's bytes: int.from_bytes(..., "big"). */
static inline uint64_t bswap64(uint64_t x) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(x >> (8 * i));
    return load64be(b);
}

#define G(a, b, c, d, x, y)                    \
    do {                                       \
        v[a] = v[a] + v[b] + (x);              \
        v[d] = rotr64(v[d] ^ v[a], 32);        \
        v[c] = v[c] + v[d];                    \
        v[b] = rotr64(v[b] ^ v[c], 24);        \
        v[a] = v[a] + v[b] + (y);              \
        v[d] = rotr64(v[d] ^ v[a], 16);        \
        v[c] = v[c] + v[d];                    \
        v[b] = rotr64(v[b] ^ v[c], 63);        \
    } while (0)

static void compress(uint64_t h[8], const uint8_t block[128], uint64_t counter, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = IV[i];
    }
    v[12] ^= counter; /* the counter's high word stays 0 */
    if (last) v[14] = ~v[14];
    for (int i = 0; i < 16; i++) m[i] = load64le(block + 8 * i);
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = SIGMA[r % 10];
        G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* The first digest word of blake2b(data, digest_size=8), as Python's big-endian signed int. */
static int64_t blake2b_64(const uint8_t *data, size_t len) {
    uint64_t h[8];
    uint8_t block[128];
    uint64_t counter = 0;
    memcpy(h, IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ 8; /* digest length 8, no key, fanout and depth 1 */
    while (len > 128) {
        counter += 128;
        compress(h, data, counter, 0);
        data += 128;
        len -= 128;
    }
    memset(block, 0, sizeof block);
    memcpy(block, data, len);
    compress(h, block, counter + len, 1);
    return (int64_t)bswap64(h[0]);
}

static PyObject *hash64(PyObject *self, PyObject *text) {
    Py_ssize_t len;
    const char *data = PyUnicode_AsUTF8AndSize(text, &len);
    if (data == NULL) return NULL;
    return PyLong_FromLongLong(blake2b_64((const uint8_t *)data, (size_t)len));
}

/* identity._learn's record of a word: its blake2b digest of 24 bytes (the word's hash in
 * each of a shingle's three places, big-endian) and one byte, 1 for a content word. */
#define RECORD 25

static void sort_u64(uint64_t *a, Py_ssize_t n) {
    /* Insertion sort below 16 values, else quicksort on the middle value: a text's few
     * hundred shingles, sorted in place without a comparison callback. */
    while (n > 16) {
        uint64_t pivot = a[n / 2];
        Py_ssize_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i >= j) break;
            uint64_t x = a[i];
            a[i++] = a[j];
            a[j--] = x;
        }
        Py_ssize_t left = j + 1; /* the smaller side recursed on, the larger looped on */
        if (left <= n - left) {
            sort_u64(a, left);
            a += left;
            n -= left;
        } else {
            sort_u64(a + left, n - left);
            n = left;
        }
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        uint64_t x = a[i];
        Py_ssize_t j = i;
        for (; j > 0 && a[j - 1] > x; j--) a[j] = a[j - 1];
        a[j] = x;
    }
}

/* The packed set of a[0..n): sorted, duplicates dropped. */
static PyObject *packed(uint64_t *a, Py_ssize_t n) {
    sort_u64(a, n);
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (m == 0 || a[i] != a[m - 1]) a[m++] = a[i];
    return PyBytes_FromStringAndSize((const char *)a, m * (Py_ssize_t)sizeof(uint64_t));
}

static int packed_view(PyObject *obj, const uint64_t **values, Py_ssize_t *n) {
    if (!PyBytes_Check(obj) || PyBytes_GET_SIZE(obj) % 8) {
        PyErr_SetString(PyExc_TypeError, "a packed set is bytes of 8-byte values");
        return -1;
    }
    *values = (const uint64_t *)PyBytes_AS_STRING(obj); /* bytes data is aligned for this */
    *n = PyBytes_GET_SIZE(obj) / 8;
    return 0;
}

/* word_sets(words, table): the packed shingle hashes of `words` and the packed values of
 * its content words; None when a word is not in `table` yet (the caller learns the words
 * and asks again). */
static PyObject *word_sets(PyObject *self, PyObject *args) {
    PyObject *words, *table;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &words, &PyDict_Type, &table)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(words);
    /* The words' records, then room for n shingles and n content words. */
    const uint8_t **records = PyMem_Malloc(sizeof(uint8_t *) * (size_t)(n ? n : 1));
    uint64_t *values = PyMem_Malloc(sizeof(uint64_t) * (size_t)(2 * n + 1));
    PyObject *shingles = NULL, *content = NULL, *result = NULL;
    if (records == NULL || values == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *record = PyDict_GetItemWithError(table, PyList_GET_ITEM(words, i));
        if (record == NULL) {
            if (!PyErr_Occurred()) result = Py_NewRef(Py_None);
            goto done;
        }
        if (!PyBytes_Check(record) || PyBytes_GET_SIZE(record) != RECORD) {
            PyErr_SetString(PyExc_TypeError, "a word's record must be 25 bytes");
            goto done;
        }
        records[i] = (const uint8_t *)PyBytes_AS_STRING(record);
    }
    Py_ssize_t count = 0;
    if (n > 0 && n <= 3) { /* one shingle of the words there are */
        uint64_t h = 0;
        for (Py_ssize_t i = 0; i < n; i++) h ^= load64be(records[i] + 8 * i);
        values[count++] = h;
    }
    for (Py_ssize_t i = 0; n > 3 && i < n - 2; i++)
        values[count++] = load64be(records[i]) ^ load64be(records[i + 1] + 8) ^ load64be(records[i + 2] + 16);
    if ((shingles = packed(values, count)) == NULL) goto done;
    count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t h = load64be(records[i]);
        if (records[i][24] && h) values[count++] = h;
    }
    if ((content = packed(values, count)) == NULL) goto done;
    result = PyTuple_Pack(2, shingles, content);
done:
    PyMem_Free(records);
    PyMem_Free(values);
    Py_XDECREF(shingles);
    Py_XDECREF(content);
    return result;
}

static PyObject *shared(PyObject *self, PyObject *args) {
    PyObject *a, *b;
    const uint64_t *x, *y;
    Py_ssize_t nx, ny, i = 0, j = 0, both = 0;
    if (!PyArg_ParseTuple(args, "OO", &a, &b)) return NULL;
    if (packed_view(a, &x, &nx) || packed_view(b, &y, &ny)) return NULL;
    while (i < nx && j < ny) {
        if (x[i] < y[j]) i++;
        else if (x[i] > y[j]) j++;
        else {
            both++;
            i++;
            j++;
        }
    }
    return PyLong_FromSsize_t(both);
}

static PyObject *pack(PyObject *self, PyObject *ints) {
    PyObject *seq = PySequence_Fast(ints, "pack() takes an iterable of ints");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    uint64_t *values = PyMem_Malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    PyObject *result = NULL;
    if (values == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        values[i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (values[i] == (uint64_t)-1 && PyErr_Occurred()) goto done;
    }
    result = packed(values, n);
done:
    PyMem_Free(values);
    Py_DECREF(seq);
    return result;
}

#define MAX_BINS 256

static char *write_u64(char *out, uint64_t value) {
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n) *out++ = digits[--n];
    return out;
}

/* band_keys(packed, bands, rows): MinHash over bands * rows bins of the set's values, the
 * empty bins filled from the next filled one, and each band's key the signed blake2b of
 * "band:v1,v2,...". */
static PyObject *band_keys(PyObject *self, PyObject *args) {
    PyObject *hashes;
    const uint64_t *values;
    Py_ssize_t n;
    int bands, rows;
    if (!PyArg_ParseTuple(args, "Oii", &hashes, &bands, &rows)) return NULL;
    if (packed_view(hashes, &values, &n)) return NULL;
    if (bands < 1 || rows < 1 || bands * rows > MAX_BINS || bands > 999) {
        PyErr_SetString(PyExc_ValueError, "bands * rows must be 1 to 256 bins");
        return NULL;
    }
    int nbins = bands * rows;
    uint64_t least[MAX_BINS], bins[MAX_BINS];
    char filled[MAX_BINS] = {0};
    if (n == 0) return PyTuple_New(0);
    for (Py_ssize_t i = n - 1; i >= 0; i--) { /* largest first: a bin's least is written last */
        int b = (int)(values[i] % (uint64_t)nbins);
        least[b] = values[i];
        filled[b] = 1;
    }
    int after = 0;
    while (!filled[after]) after++;
    for (int i = nbins - 1; i >= 0; i--) {
        if (filled[i]) {
            bins[i] = least[i];
            after = i;
        } else {
            bins[i] = least[after] ^ ((uint64_t)i * 0x9E3779B97F4A7C15ULL);
        }
    }
    PyObject *keys = PyTuple_New(bands);
    if (keys == NULL) return NULL;
    char text[4 + MAX_BINS * 21];
    for (int band = 0; band < bands; band++) {
        char *end = write_u64(text, (uint64_t)band);
        *end++ = ':';
        for (int r = 0; r < rows; r++) {
            if (r) *end++ = ',';
            end = write_u64(end, bins[band * rows + r]);
        }
        PyObject *key = PyLong_FromLongLong(blake2b_64((const uint8_t *)text, (size_t)(end - text)));
        if (key == NULL) {
            Py_DECREF(keys);
            return NULL;
        }
        PyTuple_SET_ITEM(keys, band, key);
    }
    return keys;
}

static PyMethodDef methods[] = {
    {"hash64", hash64, METH_O, "blake2b(text.encode(), digest_size=8) as a signed big-endian int."},
    {"word_sets", word_sets, METH_VARARGS, "Shingle hashes (and content-word values) of a word list."},
    {"band_keys", band_keys, METH_VARARGS, "MinHash band keys of a packed set of 64-bit hashes."},
    {"shared", shared, METH_VARARGS, "How many values two packed sets have in common."},
    {"pack", pack, METH_O, "The packed set (sorted distinct 64-bit values as bytes) of some ints."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "monitor._speedups", NULL, 0, methods};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
