package main

import (
	"math/bits"
	"slices"
)

// histogram counts values (microseconds) in log-linear buckets: exact below
// 128, then 64 buckets per power of two, so a percentile is off by less
// than 1.6%.
type histogram struct {
	counts [128 + 64*57]uint64
	n      uint64
}

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v < 128 {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - 7
	return 128 + (shift-1)*64 + int(v>>shift) - 64
}

// lowest returns the smallest value of bucket i.
func lowest(i int) int64 {
	if i < 128 {
		return int64(i)
	}
	shift := (i-128)/64 + 1
	return int64((i-128)%64+64) << shift
}

func (h *histogram) record(v int64) {
	h.counts[bucketOf(v)]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the value at quantile q (0..1), the lower bound of its
// bucket; 0 for an empty histogram.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n-1))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen > rank {
			return lowest(i)
		}
	}
	return lowest(len(h.counts) - 1)
}

// summary is the median, min and max of one figure over runs.
type summary struct {
	median, min, max float64
	n                int
}

func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{median: m, min: s[0], max: s[len(s)-1], n: len(s)}
}
