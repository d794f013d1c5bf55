package integration

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachewire/cachewire/internal/testenv"
	"github.com/cachewire/cachewire/internal/topics"
)

// connectWorker runs scripts/connect.sh (Kafka Connect with Debezium) with a port and state dir
// of the test's own; it stops when the test ends.
type connectWorker struct {
	t   *testing.T
	env []string
}

func (w *connectWorker) run(args ...string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../scripts/connect.sh", args...)
	cmd.Env = append(os.Environ(), w.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		w.t.Fatalf("scripts/connect.sh %v: %v\n%s", args, err, out)
	}
}

// TestDebeziumPipelineRefreshesEveryNode: PostgreSQL → Debezium (Kafka Connect, pgoutput) →
// Kafka → three node processes that read the topic as Debezium events and load misses from the
// same table (a postgres:// origin). An UPDATE refreshes every node; Connect is restarted in the
// middle of a run of updates and nothing is lost (the duplicates it sends again are ignored); a
// DELETE deletes on every node.
func TestDebeziumPipelineRefreshesEveryNode(t *testing.T) {
	if os.Getenv(testenv.EnvKafka) == "" || os.Getenv(testenv.EnvPostgres) == "" {
		t.Skip("needs a real Kafka and PostgreSQL with wal_level=logical (scripts/kafka.sh and scripts/postgres.sh start; " +
			testenv.EnvKafka + ", " + testenv.EnvPostgres + ")")
	}
	for _, tool := range []string{"java", "mvn", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s for Kafka Connect (scripts/connect.sh)", tool)
		}
	}
	p := testenv.NewPostgres(t)
	db := p.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// REPLICA IDENTITY FULL: a delete's before row then has the version column.
	if _, err := db.ExecContext(ctx, `CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, version bigint NOT NULL);
		ALTER TABLE users REPLICA IDENTITY FULL;
		INSERT INTO users VALUES (42, 'Ada', 1)`); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(p.DSN)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(u.Host)
	name := p.Schema // unique: the slot, the publication and the topic prefix
	topic := name + "." + p.Schema + ".users"
	c := newCluster(t)
	if err := c.kafka.Admin().Create(ctx, topics.Spec{Name: topic, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_ = c.kafka.Admin().Delete(dctx, topic)
	})

	props := filepath.Join(t.TempDir(), "users.properties")
	if err := os.WriteFile(props, []byte(fmt.Sprintf(`name=%[1]s
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
database.hostname=%[2]s
database.port=%[3]s
database.user=%[4]s
database.password=
database.dbname=%[5]s
topic.prefix=%[1]s
schema.include.list=%[6]s
table.include.list=%[6]s.users
plugin.name=pgoutput
slot.name=%[1]s
publication.name=%[1]s
publication.autocreate.mode=filtered
snapshot.mode=initial
`, name, host, port, u.User.Username(), u.Path[1:], p.Schema)), 0o644); err != nil {
		t.Fatal(err)
	}
	state, err := os.MkdirTemp("", "cachewire-connect-")
	if err != nil {
		t.Fatal(err)
	}
	_, restPort, _ := net.SplitHostPort(freeAddr(t))
	w := &connectWorker{t: t, env: []string{"CACHEWIRE_CONNECT_BROKERS=" + c.kafka.JVMBootstrap(), "CACHEWIRE_CONNECT_PORT=" + restPort, "CACHEWIRE_STATE_DIR=" + state}}
	t.Cleanup(func() {
		cmd := exec.Command("../scripts/connect.sh", "stop")
		cmd.Env = append(os.Environ(), w.env...)
		_ = cmd.Run()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(state, "connect-"+restPort, "connect.log")); err == nil {
				t.Logf("connect.log:\n%s", b)
			}
		}
		_ = os.RemoveAll(state)
		_, _ = db.ExecContext(context.Background(), `SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1`, name)
		_, _ = db.ExecContext(context.Background(), `DROP PUBLICATION IF EXISTS `+name)
	})

	var nodes []*nodeProc
	for range 3 {
		nodes = append(nodes, c.startNode(false, "--topics", topic,
			"--topic-formats", topic+"=debezium;key=user:{id};version=after.version;value=name",
			"--origin", p.DSN, "--origin-query", `SELECT name, version FROM users WHERE 'user:' || id = $1`))
	}
	for _, n := range nodes {
		if r := getKey(t, n, "user:42", 0); r.Version != 1 || string(r.Value) != "Ada" {
			t.Fatalf("initial read: %+v", r)
		}
	}
	w.run("start", props)
	serves := func(version uint64, value string) {
		t.Helper()
		for i, n := range nodes {
			testenv.WaitFor(t, time.Minute, func() string {
				r := getKey(t, n, "user:42", 0)
				if r.Version != version || string(r.Value) != value || r.Found != (value != "") {
					return fmt.Sprintf("node %d serves %q@%d (found %v) from %s, want %q@%d", i, r.Value, r.Version, r.Found, r.Tier, value, version)
				}
				return ""
			})
		}
	}
	update := func(version int, name string) {
		t.Helper()
		if _, err := db.ExecContext(ctx, `UPDATE users SET name = $1, version = $2 WHERE id = 42`, name, version); err != nil {
			t.Fatal(err)
		}
	}
	update(2, "Grace")
	serves(2, "Grace")
	update(3, "Hedy")
	update(4, "Katherine")
	w.run("restart") // mid-stream: resumes from its stored offsets
	update(5, "Margaret")
	update(6, "Radia")
	serves(6, "Radia")
	if _, err := db.ExecContext(ctx, `DELETE FROM users WHERE id = 42`); err != nil {
		t.Fatal(err)
	}
	serves(7, "") // the row's last version + 1; the Kafka tombstone after it is ignored
	for i, n := range nodes {
		if v := metric(t, n, `cachewire_events_total{result="invalid"}`); v != "" && v != "0" {
			t.Errorf("node %d counted %s invalid events", i, v)
		}
	}
}
