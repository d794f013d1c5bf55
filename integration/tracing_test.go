package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/cachewire/cachewire/internal/testenv"
	pb "github.com/cachewire/cachewire/proto/cachewire/v1"
)

// span is one span an OTLP receiver got: the exporting process and what the span says.
type span struct {
	service, instance       string
	name                    string
	traceID, spanID, parent string
	kind                    tracepb.Span_SpanKind
	attrs                   map[string]string
}

// otlpReceiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf) that keeps every span.
type otlpReceiver struct {
	url   string
	mu    sync.Mutex
	spans []span
	bad   []string // requests it could not decode
}

func startOTLP(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	fail := func(msg string) {
		r.mu.Lock()
		r.bad = append(r.bad, msg)
		r.mu.Unlock()
		http.Error(w, msg, http.StatusBadRequest)
	}
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		fail(req.Method + " " + req.URL.Path)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			fail("gzip: " + err.Error())
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		fail("read: " + err.Error())
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &export); err != nil {
		fail("decode: " + err.Error())
		return
	}
	var got []span
	for _, rs := range export.GetResourceSpans() {
		res := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			res[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := span{service: res["service.name"], instance: res["service.instance.id"], name: s.GetName(), kind: s.GetKind(),
					traceID: hex.EncodeToString(s.GetTraceId()), spanID: hex.EncodeToString(s.GetSpanId()),
					parent: hex.EncodeToString(s.GetParentSpanId()), attrs: map[string]string{}}
				for _, kv := range s.GetAttributes() {
					v := kv.GetValue()
					sp.attrs[kv.GetKey()] = fmt.Sprint(v.GetStringValue(), v.GetIntValue())
					if v.GetStringValue() != "" {
						sp.attrs[kv.GetKey()] = v.GetStringValue()
					}
				}
				got = append(got, sp)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans of one trace.
func (r *otlpReceiver) trace(id string) []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []span
	for _, s := range r.spans {
		if s.traceID == id {
			out = append(out, s)
		}
	}
	return out
}

// otelEnv is the environment that makes a process export its spans to r, quickly.
func (r *otlpReceiver) otelEnv() []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + r.url, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_BSP_SCHEDULE_DELAY=50",
		"OTEL_TRACES_SAMPLER=parentbased_always_on"}
}

// TestOneWriteTracedToEveryNode runs a real writer and three real cache nodes exporting to an
// in-test OTLP receiver, and follows one Put: its trace (the caller's, sent in traceparent
// metadata) holds the writer's Put, its commit, the relay's publish to Kafka, and an "apply L1"
// span from every node, each a child of the publish; the L2 apply of the node whose group
// member applied the event is in it too. A Get through a node that loads from the writer
// continues its caller's trace into the writer's OriginService.Load.
func TestOneWriteTracedToEveryNode(t *testing.T) {
	rcv := startOTLP(t)
	for _, kv := range rcv.otelEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v) // the processes inherit the test's environment
	}
	c := newCluster(t)
	w := startWriter(t, c.kafka.Flags(t), c.topic, filepath.Join(t.TempDir(), "writer.db"), "--writer-id", "traced-writer")
	var nodes []*nodeProc
	for i := range 3 {
		nodes = append(nodes, c.startNode(false, "--node-id", fmt.Sprintf("traced-node-%d", i+1), "--origin", "grpc://"+w.grpc))
	}

	// The caller's trace: a traceparent it made up, sampled.
	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pctx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	put, err := w.client.Put(pctx, &pb.PutRequest{Key: "traced:user:7", Value: []byte("Ada")})
	if err != nil || !put.GetPublished() {
		t.Fatalf("Put = %v, %v; want published", put, err)
	}

	nodeIDs := []string{"traced-node-1", "traced-node-2", "traced-node-3"}
	var spans []span
	testenv.WaitFor(t, 30*time.Second, func() string {
		spans = rcv.trace(traceID)
		missing := missingSpans(spans, nodeIDs)
		if len(missing) > 0 {
			return "trace " + traceID + " lacks " + strings.Join(missing, ", ") + "; has " + describe(spans)
		}
		return ""
	})
	byID := map[string]span{}
	for _, s := range spans {
		byID[s.spanID] = s
	}
	var publish span
	for _, s := range spans {
		if s.service == "cachewire-writer" && strings.HasPrefix(s.name, "publish ") {
			publish = s
		}
	}
	if publish.kind != tracepb.Span_SPAN_KIND_PRODUCER || publish.attrs["messaging.kafka.message.key"] != "traced:user:7" ||
		byID[publish.parent].name != "cachewire.v1.WriterService/Put" {
		t.Errorf("publish span = %+v, want a PRODUCER span for the key, child of the Put", publish)
	}
	for _, s := range spans {
		if s.name != "apply L1" && s.name != "apply L2" {
			continue
		}
		if s.parent != publish.spanID || s.kind != tracepb.Span_SPAN_KIND_CONSUMER || s.attrs["cachewire.version"] != fmt.Sprint(put.GetVersion()) {
			t.Errorf("%s on %s = %+v, want a CONSUMER span of v%d, child of the publish %s", s.name, s.instance, s, put.GetVersion(), publish.spanID)
		}
	}

	// A read that loads from the writer carries its caller's trace there.
	readTrace := "5bf92f3577b34da6a3ce929d0e0e4737"
	gctx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+readTrace+"-00f067aa0ba902b8-01")
	if _, err := nodes[0].client.Get(gctx, &pb.GetRequest{Key: "traced:user:7", MinVersion: put.GetVersion()}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		got := rcv.trace(readTrace)
		var node, load, origin, writer bool
		for _, s := range got {
			node = node || (s.service == "cachewire-node" && s.name == "cachewire.v1.CacheService/Get")
			load = load || s.name == "load"
			origin = origin || s.name == "origin load"
			writer = writer || (s.service == "cachewire-writer" && s.name == "cachewire.v1.OriginService/Load")
		}
		if !node || !load || !origin || !writer {
			return fmt.Sprintf("read trace: node Get %v, load %v, origin load %v, writer Load %v; has %s", node, load, origin, writer, describe(got))
		}
		return ""
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.bad) > 0 {
		t.Errorf("the receiver refused exports: %v", rcv.bad)
	}
}

// missingSpans names what one write's trace still lacks: the writer's Put, commit and publish,
// and every node's apply L1; and one apply L2.
func missingSpans(spans []span, nodes []string) []string {
	have := map[string]bool{}
	for _, s := range spans {
		switch {
		case s.service == "cachewire-writer":
			have["writer "+strings.Fields(s.name)[0]] = true
		case s.name == "apply L1":
			have["apply L1 on "+s.instance] = true
		case s.name == "apply L2":
			have["apply L2"] = true
		}
	}
	var missing []string
	want := []string{"writer cachewire.v1.WriterService/Put", "writer commit", "writer publish", "apply L2"}
	for _, n := range nodes {
		want = append(want, "apply L1 on "+n)
	}
	for _, w := range want {
		if !have[w] {
			missing = append(missing, w)
		}
	}
	return missing
}

func describe(spans []span) string {
	var b bytes.Buffer
	var names []string
	for _, s := range spans {
		names = append(names, s.service+"/"+s.instance+":"+s.name)
	}
	sort.Strings(names)
	b.WriteString("[" + strings.Join(names, " ") + "]")
	return b.String()
}
