package main

import (
	"testing"
)

// TestStorm runs the storm scenario end to end at a small size: 100
// clients on hub A, every row in child processes (this test binary). Every
// client must come back, each exactly once and in order: recovered on the
// room log, told it could not recover with the in-memory history; no
// member of B closed, no row with notes (a lost client, an error frame, a
// child exiting badly).
func TestStorm(t *testing.T) {
	startsChildren(t, "starts child processes")
	var labels []string
	for _, s := range stormSetups {
		labels = append(labels, s.label)
	}
	rows := benchRows(t, []string{"-scenario", "storm", "-runs", "1", "-storm-clients", "100"}, labels...)
	for i, s := range stormSetups {
		r := rows[i]
		num := func(header string) float64 { return r.number(t, header) }
		if notes := r.cells[len(r.cells)-1]; notes != "" {
			t.Errorf("%s: notes %q", s.label, notes)
		}
		recovered, lost := num("recovered:true"), num("recovered:false")
		if s.log && (recovered != 100 || lost != 0) || !s.log && (recovered != 0 || lost != 100) {
			t.Errorf("%s: recovered:true %v, recovered:false %v", s.label, recovered, lost)
		}
		if v := num("gaps+dups+reorders"); v != 0 {
			t.Errorf("%s: %v gaps, duplicates or reorders", s.label, v)
		}
		if v := num("max connections per client"); v != 2 {
			t.Errorf("%s: a client connected %v times, want 2", s.label, v)
		}
		if s.log && num("B members closed") != 0 {
			t.Errorf("%s: members of B closed", s.label)
		}
		if v := num("last back after stop (s)"); v <= 0 {
			t.Errorf("%s: last back %v s after the stop", s.label, v)
		}
	}
}
