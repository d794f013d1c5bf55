package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Row is one measurement of cachewire beside its anchor, measured in the same run.
type Row struct {
	Scenario  string  `json:"scenario"`
	Case      string  `json:"case"`
	Metric    string  `json:"metric"`
	Unit      string  `json:"unit"`
	Cachewire float64 `json:"cachewire"`
	Anchor    string  `json:"anchor,omitempty"`
	AnchorVal float64 `json:"anchor_value,omitempty"`
	// Ratio is Cachewire / AnchorVal (0 without an anchor).
	Ratio float64 `json:"ratio,omitempty"`
	// Goal says what the issue asks for, and Met whether this run met it ("" when no goal).
	Goal string `json:"goal,omitempty"`
	Met  string `json:"met,omitempty"`
}

// Report is the result of a run.
type Report struct {
	Date     time.Time `json:"date"`
	Mode     string    `json:"mode"` // embedded, or the real addresses
	Command  string    `json:"command"`
	Machine  string    `json:"machine"`
	Rows     []Row     `json:"rows"`
	Duration string    `json:"duration"`
	// Distributions are the latency samples behind the latency rows, as percentiles, for the
	// chart (WritePNG).
	Distributions []Distribution `json:"distributions,omitempty"`
}

func (r *Report) add(row Row) {
	if row.AnchorVal != 0 {
		row.Ratio = row.Cachewire / row.AnchorVal
	}
	r.Rows = append(r.Rows, row)
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteMarkdown writes the report as the README's Performance table.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %s, %s mode. Command: `%s`\n\n", r.Date.Format("2006-01-02"), r.Machine, r.Mode, r.Command)
	b.WriteString("| scenario | case | metric | cachewire | anchor | anchor value | ratio | goal | met |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, row := range r.Rows {
		anchorVal, ratio := "", ""
		if row.Anchor != "" {
			anchorVal = format(row.AnchorVal, row.Unit)
			if row.Ratio != 0 {
				ratio = fmt.Sprintf("%.2f×", row.Ratio)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.Scenario, row.Case, row.Metric,
			format(row.Cachewire, row.Unit), row.Anchor, anchorVal, ratio, row.Goal, row.Met)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func format(v float64, unit string) string {
	switch unit {
	case "ns":
		return round(time.Duration(v)).String()
	case "ops/s", "events/s", "keys/s", "puts/s", "rows/s":
		switch {
		case v >= 1e6:
			return fmt.Sprintf("%.2f M %s", v/1e6, unit)
		case v >= 1e4:
			return fmt.Sprintf("%.1f k %s", v/1e3, unit)
		}
		return fmt.Sprintf("%.0f %s", v, unit)
	case "B":
		switch {
		case v >= 1<<20:
			return fmt.Sprintf("%.1f MiB", v/(1<<20))
		}
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.3g %s", v, unit)
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}
