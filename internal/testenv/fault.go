package testenv

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cachewire/cachewire/internal/fault"
)

// EnvKafkaPID names the pid of the real broker's JVM, so fault tests can pause it.
const EnvKafkaPID = "CACHEWIRE_TEST_KAFKA_PID"

// EnvKafkaCtl names the script that controls the real broker (scripts/kafka.sh); its "pid"
// command is asked first, since a test may have restarted the broker under a new pid.
const EnvKafkaCtl = "CACHEWIRE_TEST_KAFKA_CTL"

func brokerPID() (int, error) {
	if ctl := os.Getenv(EnvKafkaCtl); ctl != "" {
		return fault.Script(ctl).PID()
	}
	if v := os.Getenv(EnvKafkaPID); v != "" {
		return strconv.Atoi(v)
	}
	return 0, fmt.Errorf("neither %s nor %s is set (.ci/run sets both)", EnvKafkaCtl, EnvKafkaPID)
}

// CutFetches makes Kafka stop answering consumers until heal is called (or t ends): in-process,
// every fetch request fails; against a real broker named with CACHEWIRE_TEST_KAFKA_PID, the broker
// process is paused with SIGSTOP (and resumed with SIGCONT), which cuts every client at once.
// Without a pid for a real broker the test is skipped.
func (k *Kafka) CutFetches(t testing.TB) (heal func()) {
	t.Helper()
	if k.Fake != nil {
		heal = fault.Refuse(k.Fake, "fetch cut by the test", kmsg.Fetch)
		t.Cleanup(heal)
		return heal
	}
	pid, err := brokerPID()
	if err != nil {
		t.Skipf("cutting a real broker off needs its pid: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("testenv: pause broker pid %d: %v", pid, err)
	}
	var healed atomic.Bool
	heal = func() {
		if healed.CompareAndSwap(false, true) {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("testenv: resume broker pid %d: %v", pid, err)
			}
		}
	}
	t.Cleanup(heal)
	return heal
}

// Pause makes Kafka unreachable for every client until resume is called (or t ends): in-process,
// every request fails and its connection is closed; a real broker is paused with SIGSTOP as in
// CutFetches.
func (k *Kafka) Pause(t testing.TB) (resume func()) {
	t.Helper()
	if k.Fake == nil {
		return k.CutFetches(t)
	}
	resume = fault.Refuse(k.Fake, "kafka paused by the test")
	t.Cleanup(resume)
	return resume
}
