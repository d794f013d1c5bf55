package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// EnvPostgres names a real PostgreSQL server (a DSN) for the tests to use. There is no
// in-process PostgreSQL: without it, tests that need one skip.
const EnvPostgres = "CACHEWIRE_TEST_POSTGRES"

// Postgres is one test's PostgreSQL: a schema of its own on the suite's server.
type Postgres struct {
	// DSN connects with the test's schema first on the search_path.
	DSN string
	// Schema is unique to the test; it is dropped, with everything in it, when the test ends.
	Schema string
}

// NewPostgres returns the PostgreSQL for t, or skips t when CACHEWIRE_TEST_POSTGRES is unset.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skipf("testenv: no PostgreSQL: start one with scripts/postgres.sh start and set %s=$(scripts/postgres.sh dsn)", EnvPostgres)
	}
	// Lower case with underscores only: search_path folds an unquoted name to lower case.
	schema := strings.ToLower(strings.NewReplacer(".", "_", "-", "_").Replace("cwtest_" + sanitize(t.Name()) + "_" + randomSuffix()))
	if len(schema) > 60 {
		schema = "cwtest_" + randomSuffix()
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvPostgres, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA "`+schema+`"`); err != nil {
		t.Fatalf("testenv: PostgreSQL at %s: create schema: %v", redactDSN(base), err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("testenv: %s is not a URL DSN: %v", EnvPostgres, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	p := &Postgres{DSN: u.String(), Schema: schema}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP SCHEMA "`+schema+`" CASCADE`); err != nil {
			t.Logf("testenv: drop schema %s: %v", schema, err)
		}
	})
	return p
}

// Open returns a database/sql handle on the test's schema, closed when t ends.
func (p *Postgres) Open(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", p.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return fmt.Sprint(u.Redacted())
}
