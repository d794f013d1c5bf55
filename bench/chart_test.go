package bench

import (
	"bytes"
	"errors"
	"image/png"
	"math/rand/v2"
	"testing"
	"time"
)

// TestWritePNG draws a report of two panels and checks that it is a PNG of the tiled size, and
// that the chart reads each sample at its percentiles.
func TestWritePNG(t *testing.T) {
	var r Report
	if err := r.WritePNG(new(bytes.Buffer)); !errors.Is(err, ErrNoDistributions) {
		t.Fatalf("WritePNG of an empty report = %v, want ErrNoDistributions", err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sample := func(scale time.Duration) Latencies {
		l := make(Latencies, 1000)
		for i := range l {
			l[i] = scale + time.Duration(rng.ExpFloat64()*float64(scale))
		}
		return l
	}
	r.addDist("cached read", "Get, concurrency 1", "cachewire Get (L1)", false, sample(30*time.Microsecond))
	r.addDist("cached read", "Get, concurrency 1", "go-redis GET", true, sample(80*time.Microsecond))
	r.addDist("propagation", "3 node(s)", "cachewire to every node", false, sample(3*time.Millisecond))
	r.addDist("propagation", "3 node(s)", "kafka-go produce→consume", true, Latencies{})
	if len(r.Distributions) != 3 {
		t.Fatalf("%d distributions, want 3 (an empty sample is left out)", len(r.Distributions))
	}
	d := r.Distributions[0]
	if d.N != 1000 || d.Quantiles[0].Q != 0.5 || d.Quantiles[len(d.Quantiles)-1].Q != 1 {
		t.Fatalf("distribution %+v, want n=1000 read from p50 to the max", d)
	}
	for i := 1; i < len(d.Quantiles); i++ {
		if d.Quantiles[i].NS < d.Quantiles[i-1].NS || d.Quantiles[i].Q <= d.Quantiles[i-1].Q {
			t.Fatalf("quantiles not increasing at %d: %v", i, d.Quantiles)
		}
	}
	var b bytes.Buffer
	if err := r.WritePNG(&b); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w < 1000 || h < 250 || w < h {
		t.Fatalf("image %dx%d, want one row of three 9x7 cm panels", w, h)
	}
}
