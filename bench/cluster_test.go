package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMain makes the test binary the bench's child process when the
// cluster test re-executes it as one.
func TestMain(m *testing.M) {
	if isChild(os.Args) {
		if err := runChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// clusterArgs returns the arguments that run the cluster scenario at a
// tiny size (2 hubs of 10 clients, 10 of them publishing, one short run),
// then extra.
func clusterArgs(extra ...string) []string {
	return append([]string{"-scenario", "cluster", "-runs", "1", "-warmup", "50ms", "-duration", "150ms", "-cluster-clients", "20"}, extra...)
}

// TestCluster runs the cluster scenario end to end at a tiny size: the
// hubs and NATS of every setup but the Redis ones (TestClusterRedis) in
// child processes (this test binary); then the server-side publishers of
// -cluster-broadcast on three setups, and with -cluster-broadcast-sync on
// two. Every row must have its figures, every client every message, every
// client publish its ack, and no notes: no lost client, publish error,
// ack out of order, child exiting badly (a data race in a child under
// -race) or missing delivery.
func TestCluster(t *testing.T) {
	startsChildren(t, "starts child processes and NATS")
	var keys []string
	for _, s := range clusterSetups {
		if s.broker != brokerRedis {
			keys = append(keys, s.key)
		}
	}
	t.Run("clients", func(t *testing.T) {
		checkClusterSetups(t, clusterArgs(), strings.Join(keys, ","))
	})
	t.Run("broadcast", func(t *testing.T) {
		checkClusterSetups(t, clusterArgs("-cluster-broadcast"), "one,confirm,log")
	})
	t.Run("broadcast-sync", func(t *testing.T) {
		checkClusterSetups(t, clusterArgs("-cluster-broadcast", "-cluster-broadcast-sync"), "one,confirm")
	})
}

// TestClusterRedis runs the Redis rows of the cluster scenario as
// TestCluster runs the NATS ones, the hubs in child processes on a
// redis-server child of the bench: pub/sub and Streams with client
// publishers beside the two baselines; with -cluster-broadcast; and
// pub/sub with -cluster-broadcast-sync. The same checks hold. Without
// redis-server it skips, unless WSHUB_REQUIRE_REDIS=1, when it fails.
func TestClusterRedis(t *testing.T) {
	startsChildren(t, "starts child processes and redis-server")
	needRedis(t)
	t.Run("clients", func(t *testing.T) {
		checkClusterSetups(t, clusterArgs(), "one,redis-pubsub,redis-streams,one-history")
	})
	t.Run("broadcast", func(t *testing.T) {
		checkClusterSetups(t, clusterArgs("-cluster-broadcast"), "one,redis-pubsub,redis-streams")
	})
	t.Run("broadcast-sync", func(t *testing.T) {
		checkClusterSetups(t, clusterArgs("-cluster-broadcast", "-cluster-broadcast-sync"), "one,redis-pubsub")
	})
}

// TestClusterNoRedis checks that without redis-server the Redis rows say
// that they were not run, and why, and the other rows run as usual.
func TestClusterNoRedis(t *testing.T) {
	startsChildren(t, "starts child processes")
	missing := filepath.Join(t.TempDir(), "redis-server")
	args := clusterArgs("-cluster-setups", "one,redis-pubsub,redis-streams", "-redis-server", missing)
	rows := benchRows(t, args, labelOf("one"), labelOf("redis-pubsub"), labelOf("redis-streams"))
	if v := rows[0].cell(t, "deliveries/s, 1 publisher"); v == "–" || v == "0" {
		t.Errorf("%s: deliveries/s, 1 publisher is %q", rows[0].cells[0], v)
	}
	if v := rows[0].cell(t, "notes"); v != "" {
		t.Errorf("%s: notes %q", rows[0].cells[0], v)
	}
	for _, r := range rows[1:] {
		if v := r.cell(t, "deliveries/s, 1 publisher"); v != "–" {
			t.Errorf("%s: deliveries/s, 1 publisher is %q, want –", r.cells[0], v)
		}
		if v := r.cell(t, "notes"); !strings.HasPrefix(v, "not run: "+missing+" not found") {
			t.Errorf("%s: notes %q, want not run: %s not found …", r.cells[0], v, missing)
		}
	}
}

// needRedis skips t without redis-server in PATH, or fails it if
// WSHUB_REQUIRE_REDIS=1.
func needRedis(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(redisBin); err != nil {
		if os.Getenv("WSHUB_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not found, and WSHUB_REQUIRE_REDIS=1")
		}
		t.Skip("redis-server not found: install Debian's redis-server package to run the cluster scenario's Redis rows")
	}
}

// startsChildren skips t, which runs the bench's children, under -short.
// A child built with -race sleeps a second before it exits, by default, for
// late reports; a tenth of it is enough here, and a scenario may stop a
// dozen children.
func startsChildren(t *testing.T, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip(why)
	}
	t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=100"))
}

// benchRows runs the bench with args and returns the rows of the table it
// prints, which must be one per label, in order.
func benchRows(t *testing.T, args []string, labels ...string) []tableRow {
	t.Helper()
	var out, log bytes.Buffer
	err := run(args, &out, &log)
	t.Logf("progress:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	rows := tableRows(out.String())
	if len(rows) != len(labels) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(labels), out.String())
	}
	for i, label := range labels {
		if rows[i].cells[0] != label {
			t.Fatalf("row %d is %q, want %q", i, rows[i].cells[0], label)
		}
	}
	return rows
}

// checkClusterSetups runs the bench with args and -cluster-setups keys,
// and checks their rows.
func checkClusterSetups(t *testing.T, args []string, keys string) {
	t.Helper()
	setups, err := selectClusterSetups(keys)
	if err != nil {
		t.Fatal(err)
	}
	checkCluster(t, append(args, "-cluster-setups", keys), setups)
}

// checkCluster runs the bench with args and checks the rows of setups.
func checkCluster(t *testing.T, args []string, setups []clusterSetup) {
	t.Helper()
	var labels []string
	for _, s := range setups {
		labels = append(labels, s.label)
	}
	rows := benchRows(t, args, labels...)
	head := rows[0].head
	for i, s := range setups {
		r := rows[i]
		for j, h := range head {
			v := r.cells[j]
			switch {
			case (h == "deliveries missing" || h == "acks missing") && v != "0":
				t.Errorf("%s: %s %s", s.label, v, h)
			case h == "notes" && v != "":
				t.Errorf("%s: notes %q", s.label, v)
			case strings.HasPrefix(h, "deliveries/s") && (v == "–" || v == "0"):
				t.Errorf("%s: %s is %q", s.label, h, v)
			}
		}
	}
}

// tableRow is a data row of a Markdown table with the table's header.
type tableRow struct {
	head, cells []string
}

// cell returns the row's cell in the column header.
func (r tableRow) cell(t *testing.T, header string) string {
	t.Helper()
	for j, h := range r.head {
		if h == header {
			return r.cells[j]
		}
	}
	t.Fatalf("no column %q", header)
	return ""
}

// number returns the row's cell in the column header as a number.
func (r tableRow) number(t *testing.T, header string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(strings.ReplaceAll(r.cell(t, header), ",", ""), 64)
	if err != nil {
		t.Fatalf("%s: %s is %q", r.cells[0], header, r.cell(t, header))
	}
	return v
}

// tableRows returns the data rows of the Markdown tables in s.
func tableRows(s string) []tableRow {
	var rows []tableRow
	var head []string
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			head = nil
			continue
		}
		cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(line, "| "), " |"), " | ")
		switch {
		case head == nil:
			head = cells
		case strings.HasPrefix(line, "|---"):
		default:
			rows = append(rows, tableRow{head: head, cells: cells})
		}
	}
	return rows
}
