package main

import (
	"testing"
)

// TestPresence runs the presence scenario end to end at a tiny size: 50
// members, 20 joins and 20 leaves a second for 1 s, both rows in child
// processes (this test binary). Without presence the members get no
// frame; with it they get diffs, at most one per presenceInterval (so at
// most about 11 in the window), each listing several joins and leaves.
// Neither row may have notes: no lost client, error answer, event not
// acked or child exiting badly.
func TestPresence(t *testing.T) {
	startsChildren(t, "starts child processes")
	var labels []string
	for _, s := range presenceSetups {
		labels = append(labels, s.label)
	}
	rows := benchRows(t, []string{"-scenario", "presence", "-runs", "1", "-warmup", "200ms", "-presence-members", "50", "-presence-rate", "20", "-presence-for", "1s"}, labels...)
	for i, s := range presenceSetups {
		r := rows[i]
		cell := func(header string) float64 { return r.number(t, header) }
		if notes := r.cells[len(r.cells)-1]; notes != "" {
			t.Errorf("%s: notes %q", s.label, notes)
		}
		if v := cell("events/s"); v < 30 {
			t.Errorf("%s: %v events/s, want about 40", s.label, v)
		}
		if v := cell("server CPU µs/event"); v <= 0 {
			t.Errorf("%s: server CPU %v µs/event", s.label, v)
		}
		frames, entries := cell("frames/member/s"), cell("entries/frame")
		switch s.arg {
		case "off":
			if frames != 0 {
				t.Errorf("without presence: %v frames/member/s, want 0", frames)
			}
		case "on":
			if frames <= 0 || frames > 11 {
				t.Errorf("with presence: %v frames/member/s, want some, at most 11", frames)
			}
			if entries < 2 {
				t.Errorf("with presence: %v entries/frame, want diffs coalescing several events", entries)
			}
		}
	}
}
