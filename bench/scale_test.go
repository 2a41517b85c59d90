package main

import (
	"reflect"
	"testing"
)

// TestScale runs the scale scenario end to end at a small size: 300
// clients over 2 client processes, a 1 s idle window, 5 rounds, both
// setups in both layouts, the server and the clients in child processes
// (this test binary). Every client must get every round, once; every
// figure must be there, positive (the idle CPU may be 0 over 1 s); no
// row may have notes: a lost client, a duplicate, a server error, a
// child exiting badly (a data race in a child under -race).
func TestScale(t *testing.T) {
	startsChildren(t, "starts child processes")
	const n = 300
	var labels []string
	for _, s := range scaleSetups {
		for _, rooms := range []int{1, scaleRooms(n)} {
			labels = append(labels, scaleLayout{setup: s, nRooms: rooms}.label())
		}
	}
	rows := benchRows(t, []string{"-scenario", "scale", "-scale-clients", "300", "-scale-procs", "2", "-scale-idle", "1s", "-scale-messages", "5"}, labels...)
	header := func(key string) string {
		for _, m := range scaleMetrics {
			if m.key == key {
				return m.header
			}
		}
		t.Fatalf("no metric %q", key)
		return ""
	}
	for i, r := range rows {
		label := labels[i]
		if notes := r.cell(t, "notes"); notes != "" {
			t.Errorf("%s: notes %q", label, notes)
		}
		if v := r.number(t, header("missing")); v != 0 {
			t.Errorf("%s: %v deliveries missing", label, v)
		}
		for _, key := range []string{"rate", "wall", "rss", "heap", "last", "dps"} {
			if v := r.number(t, header(key)); v <= 0 {
				t.Errorf("%s: %s is %v", label, header(key), v)
			}
		}
		// Idle readers park (on Linux): no goroutine per connection.
		if v := r.number(t, header("goroutines")); v < 0 || v > 1.1 {
			t.Errorf("%s: %s is %v", label, header("goroutines"), v)
		}
		if p50, p99, last := r.number(t, header("p50")), r.number(t, header("p99")), r.number(t, header("last")); p50 < 0 || p99 < p50 || last < p99 {
			t.Errorf("%s: fan-out p50 %v, p99 %v, last %v ms", label, p50, p99, last)
		}
		if i%2 == 1 {
			for _, key := range []string{"idle", "rssIdle"} {
				if v := r.cell(t, header(key)); v != "–" {
					t.Errorf("%s: %s is %q, want none in the many-rooms layout", label, header(key), v)
				}
			}
			continue
		}
		if v := r.number(t, header("idle")); v < 0 {
			t.Errorf("%s: idle CPU %v cores", label, v)
		}
		if v := r.number(t, header("rssIdle")); v <= 0 {
			t.Errorf("%s: RSS after idle %v B/conn", label, v)
		}
	}
}

// TestSummarizeRounds checks the merge of the client processes' reports:
// quantiles over every arrival of a round, medians over the rounds, and
// the counts summed.
func TestSummarizeRounds(t *testing.T) {
	reps := []scaleReport{
		{Rounds: [][]int64{{1000, 2000}, {3000}, {5000}}, Missing: 1, Why: map[string]int{"cut": 1}},
		{Rounds: [][]int64{{4000}, {6000, 9000}, {7000, 8000}}, Dups: 2},
	}
	got := summarizeRounds(reps, 3)
	// Rounds, in ms: {1, 2, 4}, {3, 6, 9}, {5, 7, 8}: p50 2, 6, 7; last 4,
	// 9, 8; 3 deliveries over last: 750, 333, 375 a second.
	want := fanout{p50: 6, p99: 8, last: 8, rate: 375, missing: 1,
		rounds: []scaleFigure{{2, 4, 4}, {6, 9, 9}, {7, 8, 8}},
		notes:  []string{"2 duplicate deliveries", "1 lost: cut"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("summarizeRounds: got %+v, want %+v", got, want)
	}
}
