package bench

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Distribution is one latency sample of a run, kept as its percentiles for the chart: a
// cachewire measurement or its anchor, measured in the same run.
type Distribution struct {
	Scenario string `json:"scenario"`
	Case     string `json:"case"`
	// Series names the line: "cachewire", or the anchor's name.
	Series string `json:"series"`
	Anchor bool   `json:"anchor"`
	N      int    `json:"n"`
	// Quantiles are the sample's latencies at chartQuantiles, in nanoseconds.
	Quantiles []QuantilePoint `json:"quantiles"`
}

// QuantilePoint is the latency at one quantile.
type QuantilePoint struct {
	Q  float64 `json:"q"`
	NS float64 `json:"ns"`
}

// chartQuantiles are where a distribution is read: from the median to p99.9, spaced evenly on
// the chart's axis (-log10(1-q)), and the maximum.
var chartQuantiles = func() []float64 {
	var qs []float64
	for x := math.Log10(2); x <= 3.0001; x += 0.1 {
		qs = append(qs, 1-math.Pow(10, -x))
	}
	return append(qs, 1)
}()

// addDist keeps l's distribution for the chart. An empty sample is left out.
func (r *Report) addDist(scenario, caseName, series string, anchor bool, l Latencies) {
	if len(l) == 0 {
		return
	}
	l.Summarize() // sorts
	d := Distribution{Scenario: scenario, Case: caseName, Series: series, Anchor: anchor, N: len(l)}
	for _, q := range chartQuantiles {
		i := int(q*float64(len(l))+0.5) - 1
		d.Quantiles = append(d.Quantiles, QuantilePoint{Q: q, NS: float64(l[min(max(i, 0), len(l)-1)])})
	}
	r.Distributions = append(r.Distributions, d)
}

// ErrNoDistributions is returned by WritePNG for a report that measured no latency sample.
var ErrNoDistributions = errors.New("bench: the report has no latency distributions to chart")

// WritePNG draws the report's latency distributions as one PNG: a panel per scenario and case,
// latency (log scale) against percentile, cachewire's line solid and its anchors' dashed.
func (r *Report) WritePNG(w io.Writer) error {
	type panel struct {
		title string
		dists []Distribution
	}
	var panels []*panel
	byKey := map[string]*panel{}
	for _, d := range r.Distributions {
		k := d.Scenario + ": " + d.Case
		if byKey[k] == nil {
			byKey[k] = &panel{title: k}
			panels = append(panels, byKey[k])
		}
		byKey[k].dists = append(byKey[k].dists, d)
	}
	if len(panels) == 0 {
		return ErrNoDistributions
	}
	const cols = 3
	rows := (len(panels) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, pn := range panels {
		p, err := distPlot(pn.title, pn.dists)
		if err != nil {
			return err
		}
		grid[i/cols][i%cols] = p
	}
	width, height := vg.Length(cols)*9*vg.Centimeter, vg.Length(rows)*7*vg.Centimeter
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(110))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Centimeter, PadY: vg.Centimeter,
		PadTop: vg.Millimeter * 3, PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	canvases := plot.Align(grid, tiles, dc)
	for j := range grid {
		for i, p := range grid[j] {
			if p != nil {
				p.Draw(canvases[j][i])
			}
		}
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// palette colours a panel's series in order: cachewire first.
var palette = []color.Color{color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}}

func distPlot(title string, dists []Distribution) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(9)
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = durationTicks{}
	p.X.Tick.Marker = plot.ConstantTicks{{Value: pctX(0.5), Label: "p50"}, {Value: pctX(0.9), Label: "p90"},
		{Value: pctX(0.99), Label: "p99"}, {Value: pctX(0.999), Label: "p99.9"}, {Value: pctX(1), Label: "max"}}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(7)
	p.Add(plotter.NewGrid())
	for i, d := range dists {
		pts := make(plotter.XYs, 0, len(d.Quantiles))
		for _, q := range d.Quantiles {
			pts = append(pts, plotter.XY{X: pctX(q.Q), Y: math.Max(q.NS, 1)})
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("bench: chart %s %s: %w", title, d.Series, err)
		}
		line.Color = palette[i%len(palette)]
		line.Width = vg.Points(1.5)
		if d.Anchor {
			line.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s (n=%d)", d.Series, d.N), line)
	}
	return p, nil
}

// pctX places quantile q on the x axis: -log10(1-q), so p50, p90, p99 and p99.9 are evenly
// spaced; the maximum goes one step past p99.9.
func pctX(q float64) float64 {
	if q >= 1 {
		return 3.5
	}
	return -math.Log10(1 - q)
}

// durationTicks labels a log latency axis at 1, 2 and 5 of each decade, in time units.
type durationTicks struct{}

func (durationTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for dec := math.Pow(10, math.Floor(math.Log10(math.Max(lo, 1)))); dec <= hi*10; dec *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := dec * m
			if v < lo || v > hi {
				continue
			}
			label := ""
			if m == 1 || hi/lo < 100 {
				label = time.Duration(v).String()
			}
			ts = append(ts, plot.Tick{Value: v, Label: label})
		}
	}
	return ts
}
