package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// printTable writes the Markdown table of one scenario: a row per name of
// rows, ratios to row base. It keeps the table in cfg.tables for -charts.
func printTable(w io.Writer, cfg *config, sc scenario, rows []string, res map[string]*outcome, base string) {
	cfg.tables = append(cfg.tables, table{sc: sc, rows: rows, res: res, base: base})
	fmt.Fprintf(w, "### %s\n\n%s\n\n", sc.title, sc.about(cfg))
	head := []string{sc.rowHeader()}
	for _, m := range sc.metrics {
		head = append(head, m.header)
		if m.ratio {
			head = append(head, "×")
		}
	}
	head = append(head, "notes")
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
	for _, name := range rows {
		o := res[name]
		row := []string{name}
		for _, m := range sc.metrics {
			s := summarize(o.values[m.key])
			cell := "–"
			if m.sum {
				if s.n > 0 {
					var total float64
					for _, v := range o.values[m.key] {
						total += v
					}
					cell = format(total, m.digits)
				}
			} else if s.n > 0 {
				cell = format(s.median, m.digits)
				if s.n > 1 {
					cell += " [" + format(s.min, m.digits) + "–" + format(s.max, m.digits) + "]"
				}
			}
			row = append(row, cell)
			if m.ratio {
				row = append(row, ratio(s, res[base], m.key))
			}
		}
		notes := append(o.notes, o.errs...)
		row = append(row, strings.Join(notes, "; "))
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	fmt.Fprintln(w)
}

func ratio(s summary, base *outcome, key string) string {
	if base == nil || s.n == 0 {
		return "–"
	}
	b := summarize(base.values[key])
	if b.n == 0 || b.median == 0 {
		return "–"
	}
	return strconv.FormatFloat(s.median/b.median, 'f', 2, 64)
}

// format prints v with digits decimals and thousands separators.
func format(v float64, digits int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	s := strconv.FormatFloat(v, 'f', digits, 64)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var b strings.Builder
	for i, r := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	out := b.String()
	if neg {
		out = "-" + out
	}
	if frac != "" {
		out += "." + frac
	}
	return out
}
