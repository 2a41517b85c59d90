package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// With -charts DIR, the bench draws the tables it printed as SVG bar
// charts, by hand: fanout.svg, latency.svg, idle.svg and cluster.svg, each
// when its scenarios ran. A bar is a median, its whisker the min–max of
// the runs.

// table is one printed table: its scenario, its rows in order, their
// outcomes and the row of the ratios.
type table struct {
	sc   scenario
	rows []string
	res  map[string]*outcome
	base string
}

// chartMeta is what every chart says of the run that drew it.
type chartMeta struct {
	command string // "go run ./bench -charts docs/bench"
	machine string // "2 cores (AMD EPYC), linux/amd64, go1.26.8"
	date    string
	runs    int
}

// chart is a horizontal bar chart: a block of bars per group, a bar per
// series (contender or setup).
type chart struct {
	file   string
	title  string
	note   string // how to read it
	units  []unit // the last whose div is at most half the axis, or units[0]
	groups []barGroup
	ref    float64 // when not 0, a dashed line marks this value
}

type barGroup struct {
	label string
	bars  []bar
}

type bar struct {
	series string
	s      summary // n == 0: no figure
}

// unit is how a chart prints its values: v/div with digits decimals, then
// suffix.
type unit struct {
	div    float64
	digits int
	suffix string
}

// writeCharts writes the charts that tables have data for into dir and
// returns their paths.
func writeCharts(dir string, tables []table, meta chartMeta) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, c := range []chart{fanoutChart(tables), latencyChart(tables), idleChart(tables), clusterChart(tables)} {
		if len(c.groups) == 0 {
			continue
		}
		path := filepath.Join(dir, c.file)
		if err := os.WriteFile(path, c.svg(meta), 0o644); err != nil {
			return paths, err
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// groupOf is the bars of metric key of t, a bar per row, divided by div.
func groupOf(label string, t table, key string, div float64) barGroup {
	g := barGroup{label: label}
	for _, r := range t.rows {
		s := summarize(t.res[r].values[key])
		s.median, s.min, s.max = s.median/div, s.min/div, s.max/div
		g.bars = append(g.bars, bar{series: r, s: s})
	}
	return g
}

func fanoutChart(tables []table) chart {
	c := chart{
		file:  "fanout.svg",
		title: "Fan-out: deliveries/s to one room of N clients",
		note:  "higher is better",
		units: []unit{{1e6, 2, " M"}},
	}
	for _, t := range tables {
		if strings.HasPrefix(t.sc.id, "fanout-") {
			c.groups = append(c.groups, groupOf(t.sc.short, t, "rate", 1))
		}
	}
	return c
}

func latencyChart(tables []table) chart {
	c := chart{
		file:  "latency.svg",
		title: "Latency, publishes paced to one room of 100 clients",
		note:  "p50 and p99, publish to receive; lower is better",
		units: []unit{{1, 0, " µs"}, {1000, 2, " ms"}},
	}
	for _, t := range tables {
		if t.sc.id == "latency" || strings.HasPrefix(t.sc.id, "latency-") {
			c.groups = append(c.groups, groupOf("p50, "+t.sc.short, t, "p50", 1), groupOf("p99, "+t.sc.short, t, "p99", 1))
		}
	}
	return c
}

func idleChart(tables []table) chart {
	c := chart{
		file:  "idle.svg",
		note:  "bytes per connection; lower is better",
		units: []unit{{1000, 1, " KB"}},
	}
	for _, t := range tables {
		if t.sc.id != "idle" {
			continue
		}
		c.title = t.sc.title
		for _, g := range []barGroup{groupOf("heap + stack", t, "bytes", 1), groupOf("RSS", t, "rss", 1)} {
			if hasFigures(g) {
				c.groups = append(c.groups, g)
			}
		}
	}
	return c
}

// clusterChart shows the ratio columns of the cluster table: each row's
// figures divided by the median of the first row's.
func clusterChart(tables []table) chart {
	c := chart{
		file:  "cluster.svg",
		title: "Many hubs over a broker, one room: ratio to one hub",
		units: []unit{{1, 2, "×"}},
		ref:   1,
	}
	for _, t := range tables {
		if t.sc.id != "cluster" || t.res[t.base] == nil {
			continue
		}
		c.note = "to " + t.base + "; deliveries/s: higher is better, p99: lower"
		for _, m := range t.sc.metrics {
			if b := summarize(t.res[t.base].values[m.key]); m.ratio && b.n > 0 && b.median != 0 {
				c.groups = append(c.groups, groupOf(strings.TrimSuffix(m.header, " µs"), t, m.key, b.median))
			}
		}
	}
	return c
}

func hasFigures(g barGroup) bool {
	for _, b := range g.bars {
		if b.s.n > 0 {
			return true
		}
	}
	return false
}

// Colours of the contenders, the same in every chart; other series take
// the spare ones in turn.
var (
	colours = map[string]string{
		"coder": "#8c8c8c", "wshub": "#2f6db5", "wshub-batch": "#86b4e8", "wshub-history": "#76b7b2",
		"melody": "#f28e2b", "gorilla": "#59a14f", "gorilla-batch": "#8cd17d", "centrifuge": "#b07aa1",
	}
	spare = []string{"#8c8c8c", "#2f6db5", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#edc948", "#76b7b2"}
)

func colourOf(series string, i int) string {
	if c, ok := colours[series]; ok {
		return c
	}
	return spare[i%len(spare)]
}

// Layout, in pixels.
const (
	chartWidth = 720
	margin     = 16
	rowHeight  = 18
	barHeight  = 12
	valueRoom  = 84 // right of the axis's end, for the longest bar's value
)

// textWidth estimates the width of s in a sans-serif font of size px.
func textWidth(s string, px float64) float64 {
	return 0.55 * px * float64(len([]rune(s)))
}

// niceAxis returns the end of an axis from 0 that holds hi and the step of
// its ticks: 1, 2, 2.5 or 5 times a power of ten, 3 to 5 of them.
func niceAxis(hi float64) (end, step float64) {
	if !(hi > 0) || math.IsInf(hi, 0) {
		return 1, 0.25
	}
	raw := hi / 4
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if step = m * mag; step >= raw {
			break
		}
	}
	return math.Ceil(hi/step-1e-9) * step, step
}

// svg draws the chart.
func (c chart) svg(meta chartMeta) []byte {
	var series []string
	hi, labelW := 0.0, 0.0
	for _, g := range c.groups {
		for _, b := range g.bars {
			if !slices.Contains(series, b.series) {
				series = append(series, b.series)
			}
			labelW = max(labelW, textWidth(b.series, 12))
			if b.s.n > 0 {
				hi = max(hi, b.s.median, b.s.max)
			}
		}
	}
	end, step := niceAxis(hi)
	u := c.units[0]
	for _, v := range c.units[1:] {
		if end >= 2*v.div {
			u = v
		}
	}
	x0 := margin + labelW + 8
	x1 := float64(chartWidth - valueRoom)
	xOf := func(v float64) float64 { return x0 + max(v, 0)/end*(x1-x0) }
	value := func(v float64) string { return format(v/u.div, u.digits) + u.suffix }

	var grid, body bytes.Buffer // grid lines first, behind the rest
	esc := html.EscapeString
	text := func(x, y float64, size int, attrs, s string) {
		fmt.Fprintf(&body, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\"%s>%s</text>\n", x, y, size, attrs, esc(s))
	}
	// Header: title, how to read it, the command and the machine, legend.
	runs := fmt.Sprintf("median of %d runs, whiskers min–max", meta.runs)
	if meta.runs == 1 {
		runs = "1 run"
	}
	text(margin, 24, 16, ` font-weight="bold"`, c.title)
	text(margin, 42, 12, ` fill="#333"`, c.note+"; "+runs)
	text(margin, 58, 11, ` fill="#555" font-family="monospace"`, meta.command)
	text(margin, 73, 11, ` fill="#555"`, meta.machine+", "+meta.date)
	y, x := 92.0, float64(margin)
	for i, s := range series {
		w := 14 + textWidth(s, 12) + 14
		if x+w > chartWidth-margin && x > margin {
			x, y = margin, y+16
		}
		fmt.Fprintf(&body, "<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\"/>\n", x, y-9, colourOf(s, i))
		text(x+14, y, 12, "", s)
		x += w
	}
	// A block of bars per group, under its label.
	top := y + 10
	y = top
	for _, g := range c.groups {
		text(margin, y+14, 12, ` font-weight="bold"`, g.label)
		y += 20
		for _, br := range g.bars {
			mid := y + rowHeight/2
			y += rowHeight
			text(x0-6, mid+4, 12, ` text-anchor="end"`, br.series)
			if br.s.n == 0 {
				text(x0+4, mid+4, 11, ` fill="#555"`, "no figure")
				continue
			}
			fmt.Fprintf(&body, "<rect class=\"bar\" x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%d\" fill=\"%s\"><title>%s · %s: %s</title></rect>\n",
				x0, mid-barHeight/2, xOf(br.s.median)-x0, barHeight, colourOf(br.series, slices.Index(series, br.series)), esc(g.label), esc(br.series), esc(value(br.s.median)))
			right := xOf(br.s.median)
			if br.s.n > 1 {
				from, to := xOf(br.s.min), xOf(br.s.max)
				fmt.Fprintf(&body, "<path class=\"whisker\" d=\"M%.1f %.1fH%.1fM%.1f %.1fv8M%.1f %.1fv8\" stroke=\"#222\" fill=\"none\"/>\n",
					from, mid, to, from, mid-4, to, mid-4)
				right = max(right, to)
			}
			text(right+4, mid+4, 11, "", value(br.s.median))
		}
		y += 6
	}
	// The axis: a grid line per tick, its label below.
	for i := 0; float64(i)*step <= end*(1+1e-9); i++ {
		v := float64(i) * step
		colour := "#ddd"
		if i == 0 {
			colour = "#444"
		}
		fmt.Fprintf(&grid, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", xOf(v), top, xOf(v), y, colour)
		tick := strconv.FormatFloat(math.Round(v/u.div*1e6)/1e6, 'f', -1, 64) + u.suffix
		text(xOf(v), y+14, 11, ` text-anchor="middle" fill="#333"`, tick)
	}
	if c.ref != 0 {
		fmt.Fprintf(&grid, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\" stroke-dasharray=\"4 3\"/>\n", xOf(c.ref), top, xOf(c.ref), y)
	}
	height := int(y) + 26

	var out bytes.Buffer
	fmt.Fprintf(&out, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n", chartWidth, height, chartWidth, height)
	fmt.Fprintf(&out, "<title>%s</title>\n<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n", esc(c.title))
	out.Write(grid.Bytes())
	out.Write(body.Bytes())
	out.WriteString("</svg>\n")
	return out.Bytes()
}
