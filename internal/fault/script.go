package fault

import (
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Script is the path of a real server's control script (scripts/kafka.sh, scripts/redis.sh),
// which answers "pid", "stop", "start" and "restart". The empty Script fails every call with
// ErrNoScript.
type Script string

// ErrNoScript is returned by the calls of an empty Script.
var ErrNoScript = errors.New("fault: this fault needs the server's control script (CACHEWIRE_TEST_KAFKA_CTL / CACHEWIRE_TEST_REDIS_CTL)")

// PID asks the script for the server's current pid (it may change across restarts).
func (s Script) PID() (int, error) {
	if s == "" {
		return 0, ErrNoScript
	}
	out, err := exec.Command(string(s), "pid").Output()
	if err != nil {
		return 0, fmt.Errorf("%s pid: %w", s, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, fmt.Errorf("%s pid: %q", s, out)
	}
	return pid, nil
}

// Signal sends sig to the server: SIGSTOP pauses it (every client is cut at once), SIGCONT
// resumes it.
func (s Script) Signal(sig syscall.Signal) error {
	pid, err := s.PID()
	if err != nil {
		return err
	}
	return syscall.Kill(pid, sig)
}

// Run runs the script with verb ("stop", "start", "restart") and its arguments (a cluster's
// node: "kill 2") and returns its output on failure.
func (s Script) Run(verb string, args ...string) error {
	_, err := s.Output(verb, args...)
	return err
}

// Output runs the script like Run and returns what it printed on its standard output.
func (s Script) Output(verb string, args ...string) (string, error) {
	if s == "" {
		return "", ErrNoScript
	}
	cmd := exec.Command(string(s), append([]string{verb}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s%s", s, strings.Join(append([]string{verb}, args...), " "), err, out, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}
