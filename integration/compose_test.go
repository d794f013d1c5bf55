package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Ports   []string `yaml:"ports"`
		Volumes []string `yaml:"volumes"`
	} `yaml:"services"`
}

// TestComposeIsSafeToRunOnALaptop: published ports listen on the loopback interface only,
// Kafka keeps its data in a volume under a fixed cluster id (so a restart keeps the log), and
// the image runs something useful with no command given.
func TestComposeIsSafeToRunOnALaptop(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for name, svc := range f.Services {
		for _, p := range svc.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s publishes %q on every interface; want 127.0.0.1:HOST:CONTAINER", name, p)
			}
		}
	}
	kafka := f.Services["kafka"]
	if kafka.Environment["CLUSTER_ID"] == "" || len(kafka.Volumes) == 0 {
		t.Errorf("kafka: CLUSTER_ID %q, volumes %v; want an explicit cluster id and a data volume", kafka.Environment["CLUSTER_ID"], kafka.Volumes)
	}
	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dockerfile), "\nCMD [") {
		t.Error("Dockerfile: no CMD: a bare docker run has nothing to run")
	}
}

// TestComposeCommandsMatchTheBinaries: every cachewire service in docker-compose.yml runs a
// command line (flags and environment) that its binary accepts, so the demo cluster cannot
// drift from the code. Each binary validates with --check-config, which connects to nothing.
// Health checks that run cachectl must parse too: pointed at nothing, they must fail as
// "unreachable" (exit 3), not as a usage error (exit 2).
func TestComposeCommandsMatchTheBinaries(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	ours := map[string]bool{"cachenode": true, "writer": true, "demo": true, "relay": true, "users": true}
	checked := 0
	for name, svc := range f.Services {
		if svc.Image != "cachewire:dev" {
			continue
		}
		if len(svc.Command) == 0 || !ours[svc.Command[0]] {
			t.Errorf("service %s: command %v does not start a cachewire binary", name, svc.Command)
			continue
		}
		cmd := exec.Command(filepath.Join(binDir, svc.Command[0]), append(svc.Command[1:], "--check-config")...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range svc.Environment {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("service %s: %v rejected its command line: %v\n%s", name, svc.Command, err, out)
		}
		checked++
		if hc := svc.Healthcheck.Test; len(hc) > 1 && strings.HasSuffix(hc[1], "/cachectl") {
			args := append([]string{}, hc[2:]...)
			for i, a := range args {
				if strings.HasPrefix(a, "127.0.0.1:") {
					args[i] = freeAddr(t) // nothing listens there
				}
			}
			err := exec.Command(filepath.Join(binDir, "cachectl"), args...).Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 3 {
				t.Errorf("service %s: health check %v against nothing: %v, want exit 3 (unreachable)", name, hc, err)
			}
		}
	}
	if checked < 5 {
		t.Fatalf("checked %d cachewire services, want the writer, three nodes and the demo client", checked)
	}
}
