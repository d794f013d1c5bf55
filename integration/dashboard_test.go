package integration

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestGrafanaDashboardIsProvisioned: the compose file's Grafana mounts the provisioning
// directory and the dashboards directory where the provider looks; the datasource points at
// the compose file's Prometheus; the dashboard is valid JSON whose every panel queries metrics
// that cachewire's processes export, and covers what an operator needs.
func TestGrafanaDashboardIsProvisioned(t *testing.T) {
	g, ok := loadCompose(t, "docker-compose.yml").Services["grafana"]
	if !ok {
		t.Fatal("docker-compose.yml has no grafana service")
	}
	mounts := map[string]string{} // container path -> host path
	for _, v := range g.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			t.Fatalf("grafana volume %q", v)
		}
		mounts[parts[1]] = parts[0]
	}
	if mounts["/etc/grafana/provisioning"] != "./deploy/grafana/provisioning" {
		t.Fatalf("grafana mounts %v, want ./deploy/grafana/provisioning at /etc/grafana/provisioning", mounts)
	}
	var providers struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "../deploy/grafana/provisioning/dashboards/cachewire.yml", &providers)
	if len(providers.Providers) != 1 || providers.Providers[0].Type != "file" {
		t.Fatalf("dashboard providers = %+v, want one file provider", providers)
	}
	host, ok := mounts[providers.Providers[0].Options.Path]
	if !ok {
		t.Fatalf("the provider reads %s, which compose does not mount (mounts %v)", providers.Providers[0].Options.Path, mounts)
	}
	var datasources struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, "../deploy/grafana/provisioning/datasources/prometheus.yml", &datasources)
	if _, ok := loadCompose(t, "docker-compose.yml").Services["prometheus"]; !ok || len(datasources.Datasources) != 1 ||
		datasources.Datasources[0].URL != "http://prometheus:9090" || datasources.Datasources[0].Type != "prometheus" {
		t.Fatalf("datasources = %+v, want the compose file's prometheus", datasources)
	}
	uid := datasources.Datasources[0].UID

	raw, err := os.ReadFile(filepath.Join("..", host, "cachewire.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("cachewire.json is not valid JSON: %v", err)
	}
	exported := exportedMetrics(t)
	metric := regexp.MustCompile(`cachewire_[a-z0-9_]+`)
	var all strings.Builder
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != uid || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q and %d queries, want the provisioned %q and at least one", p.Title, p.Datasource.UID, len(p.Targets), uid)
		}
		for _, q := range p.Targets {
			all.WriteString(q.Expr + "\n")
			for _, m := range metric.FindAllString(q.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !exported[base] {
					t.Errorf("panel %q queries %s, which no cachewire process exports", p.Title, m)
				}
			}
		}
	}
	for what, m := range map[string]string{"propagation latency": "cachewire_event_apply_latency_seconds", "freshness per partition": "cachewire_partition_freshness_seconds",
		"tier hit rates": "cachewire_tier_reads_total", "stale reads": "cachewire_stale_reads_total", "outbox depth": "cachewire_outbox_depth",
		"writer outbox depth": "cachewire_writer_outbox_depth", "per-client rates": "cachewire_client_requests_total"} {
		if !strings.Contains(all.String(), m) {
			t.Errorf("the dashboard does not show %s (%s)", what, m)
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// exportedMetrics are the metric names the non-test Go code registers (as string literals).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	name := regexp.MustCompile(`"(cachewire_[a-z0-9_]+)"`)
	out := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range name.FindAllSubmatch(src, -1) {
			out[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
