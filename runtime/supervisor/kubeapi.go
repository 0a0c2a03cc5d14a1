package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// kubeAPI is the little of the Kubernetes REST API the supervisor needs
// (node-password secrets, the kubernetes Endpoints), spoken as JSON over
// plain HTTP so that the k3s process stays light: client-go would add its
// caches and tens of MB to a process that does a few requests a minute.
type kubeAPI struct {
	base   string // https://127.0.0.1:6444
	client *http.Client
}

// errNotFound and errConflict are the API's 404 and 409.
var (
	errNotFound = errors.New("not found")
	errConflict = errors.New("already exists")
)

// statusError is any other non-2xx answer.
type statusError struct {
	Method, Path, Status, Message string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.Path, e.Status, e.Message)
}

// do sends body (JSON-encoded unless nil) with contentType and decodes a
// 2xx answer into out (when not nil).
func (k *kubeAPI) do(ctx context.Context, method, path, contentType string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.base+path, rd)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s %s: %w", method, path, errNotFound)
	case resp.StatusCode == http.StatusConflict:
		return fmt.Errorf("%s %s: %w", method, path, errConflict)
	case resp.StatusCode/100 != 2:
		var st struct{ Message string }
		_ = json.Unmarshal(data, &st)
		return &statusError{Method: method, Path: path, Status: resp.Status, Message: st.Message}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// apply is a server-side apply of obj (JSON is valid apply YAML) by field
// manager k3s, forced: the supervisor owns what it writes.
func (k *kubeAPI) apply(ctx context.Context, path string, obj any) error {
	return k.do(ctx, http.MethodPatch, path+"?fieldManager=k3s-supervisor&force=true", "application/apply-patch+yaml", obj, nil)
}
