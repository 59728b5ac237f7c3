package agentclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
)

const token = "Jx2kSECRETTOKENSECRETTOKENSECRETTOKEN43ch"

// fakeAgent is a minimal IPA command API with fault knobs.
type fakeAgent struct {
	mu        sync.Mutex
	commands  []api.CommandResult
	busy      bool
	dropNext  int // close the connection without answering, after recording the command
	posts     int
	lastQuery string
}

func (f *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != "/v1/commands/" {
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("agent_token") != token {
		w.WriteHeader(401)
		w.Write([]byte(`{"faultcode":"Client","faultstring":"401 Unauthorized: Token invalid."}`))
		return
	}
	if r.Method == http.MethodGet {
		json.NewEncoder(w).Encode(api.CommandList{Commands: f.commands})
		return
	}
	f.posts++
	f.lastQuery = r.URL.RawQuery
	if f.busy {
		w.WriteHeader(409)
		w.Write([]byte(`{"faultcode":"Client","faultstring":"Agent is busy: executing command execute_deploy_step"}`))
		return
	}
	var req api.CommandRequest
	json.NewDecoder(r.Body).Decode(&req)
	_, short, _ := strings.Cut(req.Name, ".")
	res := api.CommandResult{ID: "id", CommandName: short, CommandStatus: api.StatusRunning}
	f.commands = append(f.commands, res)
	if f.dropNext > 0 {
		f.dropNext--
		hj, _ := w.(http.Hijacker)
		c, _, _ := hj.Hijack()
		c.Close()
		return
	}
	json.NewEncoder(w).Encode(res)
}

func newClient() *Client {
	return New(Options{Timeout: 2 * time.Second, RetryDelay: time.Millisecond})
}

func TestExecuteAndList(t *testing.T) {
	fa := &fakeAgent{}
	srv := httptest.NewServer(fa)
	defer srv.Close()
	c := newClient()
	ep := Endpoint{URL: srv.URL, Token: token}
	res, err := c.Execute(t.Context(), ep, "deploy.execute_deploy_step", map[string]any{"step": map[string]any{"step": "write_image"}}, false)
	if err != nil || res.CommandName != "execute_deploy_step" || res.CommandStatus != api.StatusRunning {
		t.Fatalf("%+v %v", res, err)
	}
	if !strings.Contains(fa.lastQuery, "wait=false") || !strings.Contains(fa.lastQuery, "agent_token=") {
		t.Errorf("query %q", fa.lastQuery)
	}
	cmds, err := c.Commands(t.Context(), ep)
	if err != nil || len(cmds) != 1 {
		t.Fatalf("%+v %v", cmds, err)
	}
}

func TestErrorsAreClassifiedAndNeverLeakTheToken(t *testing.T) {
	fa := &fakeAgent{busy: true}
	srv := httptest.NewServer(fa)
	defer srv.Close()
	c := newClient()
	_, err := c.Execute(t.Context(), Endpoint{URL: srv.URL, Token: token}, "standby.power_off", nil, false)
	if !errors.Is(err, ErrBusy) {
		t.Errorf("409: %v, want ErrBusy", err)
	}
	_, err = c.Execute(t.Context(), Endpoint{URL: srv.URL, Token: "wrong-token-xxxxxxxxxxxxxxxxxxxxxxxxxxxx"}, "standby.power_off", nil, false)
	if !errors.Is(err, ErrAPI) || !strings.Contains(err.Error(), "Token invalid") {
		t.Errorf("401: %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	start := time.Now()
	_, err = c.Execute(t.Context(), Endpoint{URL: dead, Token: token}, "standby.power_off", nil, true)
	if !errors.Is(err, ErrUnreachable) || time.Since(start) > 5*time.Second {
		t.Errorf("dead agent: %v after %s", err, time.Since(start))
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("token leaked into an error: %v", err)
	}
	if _, err := c.Execute(t.Context(), Endpoint{URL: "not a url", Token: token}, "x.y", nil, true); err == nil {
		t.Error("bad URL accepted")
	}
}

func TestLostAnswerCountsAsDelivered(t *testing.T) {
	fa := &fakeAgent{dropNext: 1}
	srv := httptest.NewServer(fa)
	defer srv.Close()
	res, err := newClient().Execute(t.Context(), Endpoint{URL: srv.URL, Token: token}, "deploy.execute_deploy_step", nil, false)
	if err != nil || res.CommandName != "execute_deploy_step" {
		t.Fatalf("%+v %v", res, err)
	}
	if fa.posts != 1 {
		t.Errorf("the command was sent %d times; a delivered command must not be repeated", fa.posts)
	}
}

func TestTLSWithTheAgentsCertificate(t *testing.T) {
	fa := &fakeAgent{}
	srv := httptest.NewTLSServer(fa)
	defer srv.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	c := newClient()
	if _, err := c.Commands(t.Context(), Endpoint{URL: srv.URL, Token: token, VerifyCA: ca}); err != nil {
		t.Errorf("pinned certificate: %v", err)
	}
	otherCA := selfSigned(t) // httptest servers all share one certificate: make another
	if _, err := c.Commands(t.Context(), Endpoint{URL: srv.URL, Token: token, VerifyCA: otherCA}); err == nil {
		t.Error("a different certificate was accepted")
	}
	if _, err := c.Commands(t.Context(), Endpoint{URL: srv.URL, Token: token, VerifyCA: "garbage"}); err == nil {
		t.Error("a non-PEM verify CA was accepted")
	}
}

func selfSigned(t *testing.T) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
