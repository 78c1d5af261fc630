"""Caffe's random streams: boost::mt19937 and the boost distributions Caffe draws through, bit for bit.

Caffe (CPU) keeps one boost::mt19937 per thread, seeded by `Caffe::set_random_seed`
(the solver's `random_seed`); its `caffe_rng_uniform / gaussian / bernoulli / rand`
go through boost's uniform_real, normal_distribution (the ziggurat of boost >= 1.56),
bernoulli_distribution and raw words, and `caffe::shuffle` through uniform_int. HDF5Data
shuffles with `std::random_shuffle`, i.e. glibc's `rand()`. This module reproduces all of
them with whole-array NumPy operations: each distribution draws a block of 32-bit words
and works out, with array logic, which words each value consumed, so that the engine
ends where Caffe's would (a value may take several words: redraws, the ziggurat's slow
path and tail). Every result is Caffe's bit for bit: the arithmetic is boost's, in the
distribution's precision; the ziggurat tables (computed here in double, equal to boost's
as floats and in every comparison with a float) and exp() in the rare wedge test are the
only values not taken from the same operations, and no case has been found where they differ.

`stream()` is the process-wide engine (`set_random_seed` reseeds it); `new_stream(seed)`
makes a private one (a data layer's transformer or shuffling engine, seeded with a word of
the global stream, as Caffe's `Caffe::RNG(caffe_rng_rand())`). With the environment
variable CAFFE_PY_RNG=numpy (or `set_kind('numpy')`), both give NumPy Generators with the
same interface instead: the same distributions, NumPy's streams.
"""
import math
import os
import threading

import numpy as np

_WORD = 1 << 32
_CHUNK = 1 << 22        # values per block of work (bounds the temporaries of a 100M-value draw)
_MAX = np.uint32(0xffffffff)


# -- ziggurat tables (boost's layout, computed here) ------------------------------------------

def _ziggurat(f, f_inv, tail_area, strips):
    """x[0..strips], y[0..strips] of a ziggurat over the decreasing density f (unnormalised),
    as boost lays them out: x[0] = area / f(r) (the base strip's width, tail included),
    x[1] = r, ..., x[strips] = 0; y[0] = 0, y[i] = f(x[i]), y[strips] = 1. r is found by
    bisection so that the strips close at the top."""

    def build(r):
        area = r * f(r) + tail_area(r)
        x = [area / f(r), r]
        for _ in range(strips - 2):
            level = f(x[-1]) + area / x[-1]
            if level >= 1:
                return None, x
            x.append(f_inv(level))
        return x, f(x[-1]) + area / x[-1] - 1

    lo, hi = 1.0, 20.0      # build(lo) overshoots (closes early), build(hi) undershoots
    for _ in range(200):
        mid = (lo + hi) / 2
        x, gap = build(mid)
        if x is None or gap > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 4 * math.ulp(lo):
            break
    x, _ = build(hi)
    x.append(0.0)
    y = [0.0] + [f(v) for v in x[1:-1]] + [1.0]
    return np.array(x), np.array(y)


_NORMAL_X, _NORMAL_Y = _ziggurat(
    lambda x: math.exp(-x * x / 2), lambda y: math.sqrt(-2 * math.log(y)),
    lambda r: math.sqrt(math.pi / 2) * math.erfc(r / math.sqrt(2)), 128)
_EXP_X, _EXP_Y = _ziggurat(lambda x: math.exp(-x), lambda y: -math.log(y), lambda r: math.exp(-r), 256)


# -- the engine ---------------------------------------------------------------------------

def _legacy_mt19937(seed):
    """NumPy's MT19937 with mt19937's standard 32-bit seeding (boost::mt19937(seed))."""
    _, key, pos = np.random.RandomState(seed).get_state()[:3]
    bits = np.random.MT19937()
    bits.state = {'bit_generator': 'MT19937', 'state': {'key': key, 'pos': pos}}
    return np.random.Generator(bits)


class CaffeStream:
    """boost::mt19937 seeded with a 32-bit `seed` (None: from the OS), and Caffe's distributions on it.

    Words a distribution looked at but did not consume are kept for the next call, so
    successive calls continue one stream exactly as Caffe's successive draws do.
    """

    kind = 'caffe'

    def __init__(self, seed=None):
        if seed is None:
            seed = int.from_bytes(os.urandom(4), 'little')
        self.seed = int(seed) % _WORD
        self._gen = _legacy_mt19937(self.seed)
        self._back = np.empty(0, np.uint32)

    # raw words
    def words(self, n):
        """The next `n` 32-bit words (uint32), as `caffe_rng_rand()` n times."""
        n = int(n)
        if not len(self._back):
            return self._gen.integers(0, _WORD, size=n, dtype=np.uint32)
        head, self._back = self._back[:n], self._back[n:]
        if len(head) == n:
            return head
        return np.concatenate([head, self._gen.integers(0, _WORD, size=n - len(head), dtype=np.uint32)])

    def unread(self, words):
        """Put unconsumed `words` back in front of the stream."""
        if len(words):
            self._back = np.concatenate([np.asarray(words, np.uint32), self._back])

    # distributions
    def uniform(self, n, a, b, dtype=np.float32):
        """caffe_rng_uniform: boost::uniform_real(a, nextafter(b)) in `dtype`: u / 2^32 * (b' - a) + a,
        a word that rounds to b' redrawn."""
        t = np.dtype(dtype).type
        lo, hi = t(a), np.nextafter(t(b), t(np.inf))
        if not lo <= t(b):
            raise ValueError('uniform: a (%g) must not exceed b (%g)' % (a, b))
        span, divisor = t(hi - lo), t(_MAX) + t(1)
        out, done = np.empty(int(n), t), 0
        while done < len(out):
            values = self.words(min(len(out) - done, _CHUNK)).astype(t)
            values /= divisor
            values *= span
            values += lo
            below = values < hi
            if not below.all():         # rare: a word that rounds up to b'
                values = values[below]
            out[done:done + len(values)] = values
            done += len(values)
        return out

    def bernoulli(self, n, p, dtype=np.float32):
        """caffe_rng_bernoulli: boost::bernoulli_distribution<dtype>(p): word <= p * (2^32 - 1) in dtype."""
        t = np.dtype(dtype).type
        p = t(p)
        if not 0 <= p <= 1:
            raise ValueError('bernoulli: p must be in [0, 1], got %g' % p)
        out = np.zeros(int(n), bool)
        if p == 0:
            return out
        for start in range(0, len(out), _CHUNK):
            words = self.words(min(len(out) - start, _CHUNK))
            np.less_equal(words.astype(t), p * t(_MAX), out=out[start:start + len(words)])
        return out

    def gaussian(self, n, mu, sigma, dtype=np.float32):
        """caffe_rng_gaussian: boost::normal_distribution<dtype>(mu, sigma): unit ziggurat * sigma + mu."""
        t = np.dtype(dtype).type
        if not sigma > 0:
            raise ValueError('gaussian: sigma must be positive, got %g' % sigma)
        out = self._unit_normal(int(n), np.dtype(dtype))
        out *= t(sigma)
        out += t(mu)
        return out

    def uniform_int(self, highs):
        """boost::uniform_int(0, h) for each h of `highs` (0 < h < 2^32 - 1), in order: word // bucket,
        redrawn while above h."""
        highs = np.asarray(highs, np.int64)
        span = highs + 1
        bucket = _MAX // span + (_MAX % span == highs)
        out, done = np.empty(len(highs), np.int64), 0
        while done < len(out):
            words = self.words(len(out) - done).astype(np.int64)
            values = words // bucket[done:]
            bad = values > highs[done:]
            good = int(np.argmax(bad)) if bad.any() else len(values)
            out[done:done + good] = values[:good]
            done += good
            self.unread(words[good + 1:].astype(np.uint32))     # word `good` was drawn and rejected
        return out

    def shuffle(self, items):
        """caffe::shuffle: for i = n-1 .. 1 swap items[i] with items[uniform_int(0, i)] (in place)."""
        n = len(items)
        if n < 2:
            return
        picks = self.uniform_int(np.arange(n - 1, 0, -1)).tolist()
        for i, j in zip(range(n - 1, 0, -1), picks):
            items[i], items[j] = items[j], items[i]

    # the ziggurat
    def _unit_normal(self, n, dtype):
        out, done, extra = np.empty(n, dtype), 0, 8
        while done < n:
            need = min(n - done, _CHUNK)
            words = self.words(need * (1 if dtype == np.float32 else 2) + need // 16 + extra)
            values, used = _normal_block(words, need, dtype)
            out[done:done + len(values)] = values
            done += len(values)
            self.unread(words[used:])
            extra = extra * 2 if not used else 8      # a long tail ran off the block: look further
        return out


def _ceil_to(dtype, values):
    """The smallest `dtype` value >= each double: x < v in double is x < ceil(v) in dtype."""
    rounded = values.astype(dtype)
    return np.where(rounded < values, np.nextafter(rounded, dtype.type(np.inf)), rounded)


def _bucket_tables(dtype):
    """Per 8-bit bucket (sign bit, strip i): the signed strip width, and the bound below which an
    attempt is accepted at once (|x| < x[i + 1])."""
    width = _NORMAL_X[np.arange(256) >> 1].astype(dtype)
    sign = np.where(np.arange(256) & 1, 1, -1).astype(dtype)
    return width * sign, _ceil_to(dtype, _NORMAL_X[(np.arange(256) >> 1) + 1])


_TABLES = {np.dtype(t): _bucket_tables(np.dtype(t)) for t in (np.float32, np.float64)}


def _pair(first, second, dtype):
    """boost's generate_int_float_pair<dtype, 8> from words `first` (and, for double, `second`):
    (r in [0, 1), 8-bit bucket). float: the top 24 bits of the first word are r."""
    bucket = first & 0xff
    if dtype == np.float32:
        r = (first >> 8).view(np.int32).astype(np.float32)
        r *= np.float32(2.0 ** -24)
        return r, bucket
    r = (first >> 8).view(np.int32) * 2.0 ** -24
    r += (second & ((1 << 29) - 1)).view(np.int32)
    r *= 2.0 ** -29
    return r, bucket


def _pair_at(words, at, k, dtype):
    return _pair(words[at], words[at + 1] if k == 2 else None, dtype)


def _normal_block(words, need, dtype):
    """Up to `need` unit normals from the start of `words`: (values, words consumed).

    Every position is tried as the start of a ziggurat attempt: most are accepted at once and take
    the k words of their pair; the others ("irregular", about 1.5%) take one more word for the
    wedge's uniform and may be rejected; the rare tails draw exponentials from the words after
    them (as arrays, lane by lane). The chain of attempts from position 0 then decides which
    attempts Caffe made."""
    t = dtype.type
    k = 1 if dtype == np.float32 else 2        # words per int/float pair
    size = len(words)
    starts = size - k + 1
    signed_width, fast_bound = _TABLES[dtype]
    r, bucket = _pair(words[:starts], words[1:starts + 1], dtype)
    value = r * signed_width[bucket]
    slow = np.flatnonzero(np.abs(value) >= fast_bound[bucket])
    span = np.full(len(slow), k + 1, np.int64)  # words each irregular attempt takes; -1: runs off
    accept = np.ones(len(slow), bool)
    strip = (bucket[slow] >> 1).astype(np.intp)
    y01 = words[np.minimum(slow + k, size - 1)].astype(t) * t(2.0 ** -32)
    wedge = (strip != 0) & (slow + k < size) & (y01 < 1)
    accept[wedge] = _wedge_accepts(np.abs(value[slow[wedge]]), strip[wedge], y01[wedge], t)
    tail = strip == 0
    if tail.any():
        x, end = _normal_tails(words, slow[tail] + k, k, t)
        value[slow[tail]] = np.where(bucket[slow[tail]] & 1, x, -x)
        span[tail] = np.where(end < 0, -1, end - slow[tail])
    for j in np.flatnonzero(~wedge & ~tail).tolist():   # redraws, the block's end: one by one
        got = _attempt_scalar(words, int(slow[j]), k, t)
        if got is None:
            span[j] = -1
        else:
            accept[j], value[slow[j]], span[j] = got
    ends = np.arange(starts, size + 1)          # no attempt can start in the last k - 1 words
    irregular = np.concatenate([slow, ends])
    span = np.concatenate([span, np.full(len(ends), -1)])
    accept = np.concatenate([accept, np.zeros(len(ends), bool)])
    walk = _walk_single if k == 1 else _walk
    return walk(value, irregular, span, accept, need, k)


def _walk_single(value, irregular, span, accept, need, k=1):
    """The chain of one-word attempts, in array operations. An irregular attempt is visited unless
    an earlier visited one's words cover it; that only depends on earlier ones, so iterating from
    "all visited" settles one more of each run of overlapping attempts per pass (a few passes).
    The values are then those of every position below the first visited attempt that runs off the
    block, but the rejected attempts and the words covered by longer ones."""
    reach_all = np.where(span < 0, len(value) + 1, irregular + span)
    visited = np.ones(len(irregular), bool)
    while True:
        reach = np.where(visited, reach_all, irregular + 1)
        before = np.maximum.accumulate(np.concatenate([[0], reach[:-1]]))
        settled = before <= irregular
        if np.array_equal(settled, visited):
            break
        visited = settled
    spots, spans, oks = irregular[visited], span[visited], accept[visited]
    stop = np.argmax(spans < 0)                 # the first visited attempt that runs off the block
    limit, spots, spans, oks = spots[stop], spots[:stop], spans[:stop], oks[:stop]
    covering = spans > 1
    starts, counts = spots[covering] + 1, spans[covering] - 1
    first = np.cumsum(counts) - counts
    covered = np.repeat(starts - first, counts) + np.arange(counts.sum())
    excluded = np.sort(np.concatenate([spots[~oks], covered]))     # disjoint: attempts never overlap
    keep = np.ones(limit, bool)
    keep[excluded] = False
    values = value[:limit][keep]
    if len(values) < need:
        return values, int(limit)
    last = need - 1 + np.searchsorted(excluded - np.arange(len(excluded)), need - 1, side='right')
    at = np.searchsorted(spots, last)
    taken = spans[at] if at < len(spots) and spots[at] == last else 1
    return values[:need], int(last + taken)


def _walk(value, irregular, span, accept, need, k):
    """The chain of k-word attempts, visiting the irregular ones one by one (double precision)."""
    runs, counts = [], []                       # the values taken: runs of attempts k words apart
    count, pos = 0, 0
    for p, width, ok in zip(irregular.tolist(), span.tolist(), accept.tolist()):
        if p < pos or (p - pos) % k:
            continue                            # inside another attempt's words
        regular = (p - pos) // k
        if count + regular >= need or width < 0:
            regular = min(regular, need - count)
            runs.append(pos)
            counts.append(regular)
            pos += regular * k
            break
        runs.append(pos)
        counts.append(regular)
        count += regular
        if ok:
            runs.append(p)
            counts.append(1)
            count += 1
        pos = p + width
        if count == need:
            break
    runs, counts = np.array(runs, np.intp), np.array(counts, np.intp)
    first = np.cumsum(counts) - counts          # index of each run's first value
    taken = np.repeat(runs - first * k, counts) + np.arange(counts.sum()) * k
    return value[taken], pos


def _wedge_accepts(x, i, y01, t):
    """boost's test for a point (x, y01) in strip i, outside the strip's inner rectangle."""
    xi, xi1 = _NORMAL_X[i], _NORMAL_X[i + 1]
    yi, yi1 = _NORMAL_Y[i], _NORMAL_Y[i + 1]
    y = yi.astype(t) + y01 * (yi1 - yi).astype(t)
    chord = (xi - xi1).astype(t) * y01 - (xi.astype(t) - x)
    tangent = y - (yi.astype(t) + (xi.astype(t) - x) * yi.astype(t) * xi.astype(t))
    convex = xi >= 1
    above_upper = np.where(convex, chord, tangent)
    above_lower = np.where(convex, tangent, chord)
    density = np.exp(-(x * x / t(2)).astype(np.float64)).astype(t)
    return (above_upper < 0) & ((above_lower < 0) | (y < density))


def _normal_tails(words, at, k, t):
    """boost's tail beyond x[1] for attempts whose tails start at words `at`: exponential(x[1]) and
    exponential(1) draws until 2y > x^2. (x[1] + x, next word), the word -1 where the block ends."""
    start = t(_NORMAL_X[1])
    value = np.zeros(len(at), t)
    at = at.astype(np.int64)
    todo = np.arange(len(at))
    while len(todo):
        x, after_x = _unit_exponentials(words, at[todo], k, t)
        y, after_y = _unit_exponentials(words, np.where(after_x < 0, len(words), after_x), k, t)
        x /= start
        at[todo] = np.where(after_x < 0, -1, after_y)
        done = (at[todo] < 0) | (t(2) * y > x * x)
        value[todo[done]] = x[done] + start
        todo = todo[~done]
    return value, at


def _unit_exponentials(words, at, k, t):
    """boost's exponential ziggurat (256 strips), one value per lane starting at word `at`:
    (values, next word), the word -1 where the block ends."""
    out = np.zeros(len(at), t)
    shift = np.zeros(len(at), t)
    at = at.astype(np.int64)
    todo = np.arange(len(at))
    size = len(words)
    while len(todo):
        here = at[todo]
        short = here + k > size
        at[todo[short]] = -1
        todo, here = todo[~short], here[~short]
        r, i = _pair_at(words, here, k, np.dtype(t))
        i = i.astype(np.intp)
        x = r * _EXP_X[i].astype(t)
        fast = x < _EXP_X[i + 1].astype(t)
        done = todo[fast]
        out[done], at[done] = shift[done] + x[fast], here[fast] + k
        base = ~fast & (i == 0)                 # the tail is the body again, shifted
        shift[todo[base]] += t(_EXP_X[1])
        at[todo[base]] = here[base] + k
        wedge = ~fast & (i != 0)
        lanes, x, i, cur = todo[wedge], x[wedge], i[wedge], here[wedge] + k
        y01 = np.ones(len(lanes), t)
        while True:                             # uniform_01: redrawn while it rounds to 1
            redo = (y01 >= 1) & (cur < size)
            if not redo.any():
                break
            y01[redo] = words[cur[redo]].astype(t) * t(2.0 ** -32)
            cur[redo] += 1
        short = y01 >= 1
        at[lanes[short]] = -1
        lanes, x, i, cur, y01 = lanes[~short], x[~short], i[~short], cur[~short], y01[~short]
        xi, xi1, yi, yi1 = _EXP_X[i], _EXP_X[i + 1], _EXP_Y[i], _EXP_Y[i + 1]
        y = yi.astype(t) + y01 * (yi1 - yi).astype(t)
        above_upper = (xi - xi1).astype(t) * y01 - (xi.astype(t) - x)
        above_lower = y - (yi1.astype(t) + (xi1.astype(t) - x) * yi1.astype(t))
        density = np.exp(-x.astype(np.float64)).astype(t)
        ok = (above_upper < 0) & ((above_lower < 0) | (y < density))
        out[lanes[ok]] = x[ok] + shift[lanes[ok]]
        at[lanes] = cur
        todo = np.concatenate([todo[base], lanes[~ok]])
    return out, at


class _Short(Exception):
    """A scalar attempt ran past the block of words."""


class _Cursor:
    def __init__(self, words, pos):
        self.words, self.pos = words, pos

    def word(self):
        if self.pos >= len(self.words):
            raise _Short
        self.pos += 1
        return int(self.words[self.pos - 1])

    def pair(self, k, t):
        first = self.word()
        if k == 1:
            return t((first >> 8) * 2.0 ** -24), first & 0xff
        second = self.word()
        return t(((first >> 8) * 2.0 ** -24 + (second & ((1 << 29) - 1))) * 2.0 ** -29), first & 0xff

    def uniform01(self, t):
        while True:
            value = t(t(self.word()) * t(2.0 ** -32))
            if value < 1:
                return value


def _attempt_scalar(words, p, k, t):
    """One ziggurat attempt at word p, step by step: (accepted, value, words taken), None if short."""
    cur = _Cursor(words, p)
    try:
        r, bucket = cur.pair(k, t)
        i, sign = bucket >> 1, t((bucket & 1) * 2 - 1)
        x = t(r * t(_NORMAL_X[i]))
        if float(x) < _NORMAL_X[i + 1]:
            return True, t(x * sign), cur.pos - p
        if i == 0:
            return True, t(_normal_tail(cur, k, t) * sign), cur.pos - p
        y01 = cur.uniform01(t)
        ok = _wedge_accepts(np.array([x], t), np.array([i]), np.array([y01], t), t)[0]
        return bool(ok), t(x * sign), cur.pos - p
    except _Short:
        return None


def _normal_tail(cur, k, t):
    """boost's tail beyond x[1]: exponential(x[1]) and exponential(1) draws until 2y > x^2."""
    start = t(_NORMAL_X[1])
    while True:
        x = t(_unit_exponential(cur, k, t) / start)
        y = _unit_exponential(cur, k, t)
        if t(2) * y > x * x:
            return t(x + start)


def _unit_exponential(cur, k, t):
    """boost's exponential ziggurat (256 strips), one value."""
    shift = t(0)
    while True:
        r, i = cur.pair(k, t)
        x = t(r * t(_EXP_X[i]))
        if x < t(_EXP_X[i + 1]):
            return t(shift + x)
        if i == 0:
            shift = t(shift + t(_EXP_X[1]))
            continue
        y01 = cur.uniform01(t)
        y = t(t(_EXP_Y[i]) + y01 * t(_EXP_Y[i + 1] - _EXP_Y[i]))
        above_upper = t(t(_EXP_X[i] - _EXP_X[i + 1]) * y01 - t(t(_EXP_X[i]) - x))
        above_lower = t(y - t(t(_EXP_Y[i + 1]) + t(t(_EXP_X[i + 1]) - x) * t(_EXP_Y[i + 1])))
        if above_upper < 0 and (above_lower < 0 or y < t(math.exp(-float(x)))):
            return t(x + shift)


# -- NumPy's streams, same interface ---------------------------------------------------------

class NumpyStream:
    """NumPy's Generator behind CaffeStream's interface (CAFFE_PY_RNG=numpy): Caffe's distributions,
    not its streams."""

    kind = 'numpy'

    def __init__(self, seed=None):
        self.seed = seed
        self._gen = np.random.default_rng(seed)
        self._back = np.empty(0, np.uint32)

    def words(self, n):
        n = int(n)
        head, self._back = self._back[:n], self._back[n:]
        rest = self._gen.integers(0, _WORD, size=n - len(head), dtype=np.uint32)
        return np.concatenate([head, rest]) if len(head) else rest

    unread = CaffeStream.unread

    def uniform(self, n, a, b, dtype=np.float32):
        t = np.dtype(dtype).type
        return (t(a) + self._gen.random(int(n), dtype=t) * (t(b) - t(a))).astype(t, copy=False)

    def bernoulli(self, n, p, dtype=np.float32):
        return self._gen.random(int(n), dtype=np.float64) < float(p)

    def gaussian(self, n, mu, sigma, dtype=np.float32):
        t = np.dtype(dtype).type
        out = self._gen.standard_normal(int(n), dtype=t)
        out *= t(sigma)
        out += t(mu)
        return out

    def uniform_int(self, highs):
        return self._gen.integers(0, np.asarray(highs) + 1)

    def shuffle(self, items):
        order = self._gen.permutation(len(items)).tolist()
        items[:] = [items[j] for j in order]


# -- glibc's rand() (HDF5Data's std::random_shuffle) -------------------------------------------

class GlibcRand:
    """glibc's rand() (the TYPE_3 additive generator), seeded as srand(seed); blocks of outputs are
    computed as a linear map (mod 2^32) of the last 31 state words."""

    _BLOCK = 1024
    _map = None

    def __init__(self, seed=1):
        seed = int(seed) % _WORD or 1
        word = seed - _WORD if seed >= 1 << 31 else seed     # glibc keeps it in an int32
        state = [word]
        for _ in range(30):
            hi = word // 127773 if word >= 0 else -(-word // 127773)          # C's division
            lo = word - hi * 127773
            word = 16807 * lo - 2836 * hi
            if word < 0:
                word += 2147483647
            state.append(word)
        state += state[:3]
        self._state = np.array(state[-31:], np.int64).astype(np.uint64) % _WORD
        self._pending = np.empty(0, np.uint32)
        self._raw(310)              # glibc discards the first 310 outputs

    @classmethod
    def _linear_map(cls):
        """Rows: each of the next _BLOCK words as a combination of the 31 state words (mod 2^32)."""
        if cls._map is None:
            rows = [row for row in np.eye(31, dtype=np.uint64)]
            for n in range(cls._BLOCK):
                rows.append((rows[n] + rows[n + 28]) % _WORD)
            cls._map = np.array(rows[31:], np.uint64)
        return cls._map

    def _block(self):
        out = (self._linear_map() @ self._state) % _WORD
        self._state = out[-31:]
        return out.astype(np.uint32)

    def _raw(self, n):
        parts, have = [self._pending], len(self._pending)
        while have < n:
            block = self._block()
            parts.append(block)
            have += len(block)
        words = np.concatenate(parts)
        self._pending = words[n:]
        return words[:n]

    def rand(self, n):
        """The next `n` rand() values (int64, each in [0, 2^31))."""
        return (self._raw(int(n)) >> 1).astype(np.int64)

    def random_shuffle(self, items):
        """libstdc++'s std::random_shuffle over rand(): for i = 1..n-1 swap items[i], items[rand() % (i + 1)]."""
        n = len(items)
        if n < 2:
            return
        picks = (self.rand(n - 1) % np.arange(2, n + 1)).tolist()
        for i, j in zip(range(1, n), picks):
            items[i], items[j] = items[j], items[i]


# -- the process-wide state --------------------------------------------------------------------

_KINDS = {'caffe': CaffeStream, 'numpy': NumpyStream}
_lock = threading.Lock()
_state = {'kind': os.environ.get('CAFFE_PY_RNG', 'caffe').lower() or 'caffe', 'stream': None,
          'c_rand': None}
if _state['kind'] not in _KINDS:
    raise ValueError('CAFFE_PY_RNG must be "caffe" or "numpy", got "%s"' % os.environ['CAFFE_PY_RNG'])


def set_kind(kind):
    """'caffe' (Caffe's exact streams, the default) or 'numpy' (NumPy's generator, same distributions);
    applies to streams made from now on (the global one is remade unseeded)."""
    if kind not in _KINDS:
        raise ValueError('random stream kind must be one of %s, got "%s"' % (', '.join(_KINDS), kind))
    _state['kind'] = kind
    _state['stream'] = None


def kind():
    return _state['kind']


def rand(stream, n):
    """DataTransformer::Rand(n): one word of `stream` modulo n."""
    return int(stream.words(1)[0]) % n


def new_stream(seed=None):
    """A private engine of the current kind (Caffe::RNG(seed))."""
    return _KINDS[_state['kind']](seed)


def set_random_seed(seed):
    """Caffe::set_random_seed: reseed the process-wide stream (seed taken mod 2^32)."""
    _state['stream'] = new_stream(int(seed) % _WORD)


def stream():
    """The process-wide stream (Caffe's engine of the main thread); unseeded until set_random_seed."""
    with _lock:
        if _state['stream'] is None:
            _state['stream'] = new_stream()
        return _state['stream']


def c_rand():
    """The process-wide glibc rand() state (unseeded: srand(1)), shared by every HDF5Data layer."""
    with _lock:
        if _state['c_rand'] is None:
            _state['c_rand'] = GlibcRand(1)
        return _state['c_rand']


def c_srand(seed=1):
    """srand(seed): restart glibc's rand() sequence (a fresh process starts at srand(1))."""
    _state['c_rand'] = GlibcRand(seed)
