package main

import (
	"bytes"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// svgNode is any element of an SVG document.
type svgNode struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Text    string     `xml:",chardata"`
	Nodes   []svgNode  `xml:",any"`
}

func (n svgNode) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// walk calls f on n and every element under it.
func (n svgNode) walk(f func(svgNode)) {
	f(n)
	for _, c := range n.Nodes {
		c.walk(f)
	}
}

// chartBar is a bar of a drawn chart: its title's "group · series" and
// its width.
type chartBar struct {
	key   string
	width float64
}

// parseChart parses an SVG as XML and returns its bars and the count of
// its whiskers.
func parseChart(t *testing.T, path string) ([]chartBar, int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var root svgNode
	if err := xml.NewDecoder(bytes.NewReader(b)).Decode(&root); err != nil {
		t.Fatalf("%s is not XML: %v", path, err)
	}
	if root.XMLName.Local != "svg" || root.XMLName.Space != "http://www.w3.org/2000/svg" {
		t.Fatalf("%s: root element %v", path, root.XMLName)
	}
	var bars []chartBar
	whiskers := 0
	root.walk(func(n svgNode) {
		switch class := n.attr("class"); {
		case n.XMLName.Local == "rect" && class == "bar":
			w, err := strconv.ParseFloat(n.attr("width"), 64)
			if err != nil || len(n.Nodes) != 1 || n.Nodes[0].XMLName.Local != "title" {
				t.Errorf("%s: bar %+v", path, n)
				return
			}
			key, _, _ := strings.Cut(n.Nodes[0].Text, ":")
			bars = append(bars, chartBar{key: key, width: w})
		case n.XMLName.Local == "path" && class == "whisker":
			whiskers++
		}
	})
	return bars, whiskers
}

// checkBars checks that bars are exactly one per key of want, with
// widths proportional to want's values.
func checkBars(t *testing.T, name string, bars []chartBar, want map[string]float64) {
	t.Helper()
	if len(bars) != len(want) {
		t.Errorf("%s: %d bars, want %d", name, len(bars), len(want))
	}
	// The width of a bar of value 1, fitted by least squares.
	var wv, vv float64
	for _, b := range bars {
		wv += b.width * want[b.key]
		vv += want[b.key] * want[b.key]
	}
	perUnit := wv / vv
	for _, b := range bars {
		v, ok := want[b.key]
		if !ok {
			t.Errorf("%s: unexpected bar %q", name, b.key)
			continue
		}
		delete(want, b.key) // a second bar of the same key is unexpected
		// Widths are printed to 0.01 px.
		if math.Abs(b.width-v*perUnit) > 0.02 {
			t.Errorf("%s: bar %q is %.2f px for %g, want %.2f px (proportional to the others)", name, b.key, b.width, v, v*perUnit)
		}
	}
	for k := range want {
		t.Errorf("%s: no bar %q", name, k)
	}
}

// madeUp returns the outcomes of rows with runs runs of each key, the
// figure of row i run r being base[key]·(i+1)·(1 + r/10).
func madeUp(rows []string, base map[string]float64, runs int) map[string]*outcome {
	res := make(map[string]*outcome)
	for i, r := range rows {
		o := &outcome{values: make(map[string][]float64)}
		for k, v := range base {
			for run := range runs {
				o.values[k] = append(o.values[k], v*float64(i+1)*(1+float64(run)/10))
			}
		}
		res[r] = o
	}
	return res
}

// median of madeUp's figures of row i.
func madeUpMedian(v float64, i, runs int) float64 {
	return summarize(madeUp([]string{"x"}, map[string]float64{"k": v * float64(i+1)}, runs)["x"].values["k"]).median
}

// testConfig has the default sizes of run, and latencyRates rates.
func testConfig(rates []int) *config {
	return &config{
		runs: 3, warmup: 500 * time.Millisecond, duration: 2 * time.Second, window: 64,
		fanout: []int{100, 1000}, latencyN: 100, latencyHz: 50000, latencyRates: rates,
		roomsN: 1000, roomSize: 10, idleN: 10000, churnConc: 8, floodN: []int{4, 100}, floodMessages: 20000,
	}
}

// TestCharts feeds made-up tables to the chart writer and checks the
// SVGs: XML, a bar per figure, widths proportional to the figures, a
// whisker per bar of several runs, the command and the machine named, and
// no chart without figures.
func TestCharts(t *testing.T) {
	scs := make(map[string]scenario)
	cfg := testConfig([]int{50, 200})
	cfg.fanout = append(cfg.fanout, 10000) // a third fan-out group
	for _, sc := range scenarios(cfg) {
		scs[sc.id] = sc
	}
	names := contenderNames(false)
	const runs = 3
	var tables []table
	add := func(id string, rows []string, base map[string]float64) {
		sc, ok := scs[id]
		if !ok {
			t.Fatalf("no scenario %q", id)
		}
		tables = append(tables, table{sc: sc, rows: rows, res: madeUp(rows, base, runs), base: rows[0]})
	}
	add("fanout-100", names, map[string]float64{"rate": 200e3, "cpu": 5})
	add("fanout-1000", names, map[string]float64{"rate": 150e3})
	add("fanout-10000", names, map[string]float64{"rate": 120e3})
	add("latency-50", names, map[string]float64{"p50": 300, "p99": 900, "rate": 5000})
	add("latency-200", names, map[string]float64{"p50": 500, "p99": 2000})
	add("rooms", names, map[string]float64{"rate": 1e6})
	add("idle", names, map[string]float64{"bytes": 15000, "rss": 16000})
	setups := clusterSetupKeys()
	for i, k := range setups {
		setups[i] = labelOf(k)
	}
	clusterBase := map[string]float64{"rate1": 1e6, "rate10": 8e5, "p99": 5e4, "p50": 1e4}
	add("cluster", setups, clusterBase)
	// One setup has no figures, its bars are left out; the baseline's are
	// still the denominators.
	tables[len(tables)-1].res[setups[2]].values = map[string][]float64{}

	dir := t.TempDir()
	meta := chartMeta{command: "go run ./bench -charts " + dir, machine: "2 cores (test), linux/amd64", date: "2006-01-02", runs: runs}
	paths, err := writeCharts(filepath.Join(dir, "charts"), tables, meta)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, p := range paths {
		files = append(files, filepath.Base(p))
	}
	if want := []string{"fanout.svg", "latency.svg", "idle.svg", "cluster.svg"}; !slices.Equal(files, want) {
		t.Fatalf("wrote %v, want %v", files, want)
	}

	want := map[string]map[string]float64{}
	expect := func(file, group string, rows []string, v float64, div float64) {
		if want[file] == nil {
			want[file] = make(map[string]float64)
		}
		for i, r := range rows {
			want[file][group+" · "+r] = madeUpMedian(v, i, runs) / div
		}
	}
	expect("fanout.svg", "N = 100", names, 200e3, 1)
	expect("fanout.svg", "N = 1,000", names, 150e3, 1)
	expect("fanout.svg", "N = 10,000", names, 120e3, 1)
	expect("latency.svg", "p50, 50 publishes/s", names, 300, 1)
	expect("latency.svg", "p99, 50 publishes/s", names, 900, 1)
	expect("latency.svg", "p50, 200 publishes/s", names, 500, 1)
	expect("latency.svg", "p99, 200 publishes/s", names, 2000, 1)
	expect("idle.svg", "heap + stack", names, 15000, 1)
	expect("idle.svg", "RSS", names, 16000, 1)
	for _, m := range clusterMetrics {
		if m.ratio {
			v := clusterBase[m.key]
			expect("cluster.svg", strings.TrimSuffix(m.header, " µs"), setups, v, madeUpMedian(v, 0, runs))
			delete(want["cluster.svg"], strings.TrimSuffix(m.header, " µs")+" · "+setups[2])
		}
	}
	for _, p := range paths {
		name := filepath.Base(p)
		bars, whiskers := parseChart(t, p)
		n := len(want[name])
		checkBars(t, name, bars, want[name])
		if whiskers != n {
			t.Errorf("%s: %d whiskers, want one per bar, %d", name, whiskers, n)
		}
		b, _ := os.ReadFile(p)
		for _, s := range []string{meta.command, "2 cores", "median of 3 runs"} {
			if !bytes.Contains(b, []byte(s)) {
				t.Errorf("%s does not say %q", name, s)
			}
		}
		if bytes.Contains(b, []byte("<script")) || bytes.Contains(b, []byte("@import")) || bytes.Contains(b, []byte("href")) {
			t.Errorf("%s refers to something outside it", name)
		}
	}

	// Only the charts with data: one run of fanout-1000, no whiskers; a
	// name that XML must escape.
	rows := []string{names[0], "<a & b>"}
	paths, err = writeCharts(dir, []table{{sc: scs["fanout-1000"], rows: rows, res: madeUp(rows, map[string]float64{"rate": 1e6}, 1)}}, chartMeta{runs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 || filepath.Base(paths[0]) != "fanout.svg" {
		t.Fatalf("wrote %v, want fanout.svg alone", paths)
	}
	bars, whiskers := parseChart(t, paths[0])
	checkBars(t, "one run", bars, map[string]float64{"N = 1,000 · " + rows[0]: 1e6, "N = 1,000 · " + rows[1]: 2e6})
	if whiskers != 0 {
		t.Errorf("one run: %d whiskers", whiskers)
	}
}

func TestNiceAxis(t *testing.T) {
	for _, hi := range []float64{0.7, 1, 1.6, 3.2, 9.9, 10, 1.88e6, 14917, 2944, 123456789} {
		end, step := niceAxis(hi)
		ticks := end / step
		if end < hi || end > 2*hi || ticks < 2 || ticks > 5 || math.Abs(ticks-math.Round(ticks)) > 1e-9 {
			t.Errorf("niceAxis(%g) = %g, %g", hi, end, step)
		}
	}
}

// TestLatencyRates checks the latency scenarios with and without
// -latency-rates.
func TestLatencyRates(t *testing.T) {
	for _, tc := range []struct {
		rates []int
		want  []string // id, chart label and deliveries/s of each
	}{
		{nil, []string{"latency 500 publishes/s 50000"}},
		{[]int{50, 200}, []string{"latency-50 50 publishes/s 5000", "latency-200 200 publishes/s 20000"}},
	} {
		cfg := testConfig(tc.rates)
		scs, err := selectScenarios(scenarios(cfg), "latency")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, sc := range scs {
			_, rest, _ := strings.Cut(sc.about(cfg), "paced at ")
			hz, _, _ := strings.Cut(rest, " ")
			got = append(got, sc.id+" "+sc.short+" "+hz)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("-latency-rates %v: %q, want %q", tc.rates, got, tc.want)
		}
	}
}
