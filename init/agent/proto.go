// Package agent is the control protocol between ballast's init and the
// host: line-delimited JSON, one request per line, one response per line,
// over a virtio-serial port (always in QEMU) or vsock (where the host has it).
//
// This file is the contract. The server lives in the init, the client is
// used by the QEMU harness and `ballast run`; both import these types.
package agent

import "time"

// PortName is the virtio-serial port name the init serves on. In the guest
// it appears as /sys/class/virtio-ports/vport*/name == PortName.
const PortName = "org.ballast.agent.0"

// VsockPort is the vsock port the init listens on where vsock exists.
const VsockPort = 1024

// MaxLine is the longest request or response line accepted, in bytes.
const MaxLine = 4 << 20

// Methods.
const (
	MethodStatus   = "status"   // -> Status
	MethodLogs     = "logs"     // LogsParams -> Logs
	MethodExec     = "exec"     // ExecParams -> ExecResult (privileged)
	MethodPoweroff = "poweroff" // -> nil (privileged)
	MethodReboot   = "reboot"   // -> nil (privileged)
	MethodPing     = "ping"     // -> "pong"
)

// Request is one line from the host.
type Request struct {
	ID     uint64 `json:"id"`
	Method string `json:"method"`
	// Params is method specific; absent for methods without parameters.
	Params any `json:"params,omitempty"`
}

// Response is one line from the guest, answering the request with the same ID.
type Response struct {
	ID     uint64 `json:"id"`
	Result any    `json:"result,omitempty"`
	// Error is set, and Result absent, when the call failed.
	Error *Error `json:"error,omitempty"`
}

// Error codes.
const (
	CodeBadRequest    = "bad_request"
	CodeUnknownMethod = "unknown_method"
	CodeForbidden     = "forbidden" // privileged call not enabled by cloud-config
	CodeFailed        = "failed"
)

// Error is a failed call.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Status is the answer to MethodStatus.
type Status struct {
	Boot     Boot      `json:"boot"`
	Hostname string    `json:"hostname"`
	Kernel   string    `json:"kernel"` // uname -r
	Arch     string    `json:"arch"`   // GOARCH of the init
	Version  string    `json:"version"`
	Config   Config    `json:"config"`
	Network  []Iface   `json:"network"`
	Services []Service `json:"services"`
	Memory   Memory    `json:"memory"`
	Disks    []Mount   `json:"mounts"`
	Cgroups  Cgroups   `json:"cgroups"`
	// Node is the Kubernetes node's state once a runtime runs; nil before.
	Node *Node `json:"node,omitempty"`
	// Watchdog is the hardware watchdog PID 1 keeps alive; nil when the
	// machine has none (or before the boot step that arms it).
	Watchdog *Watchdog `json:"watchdog,omitempty"`
}

// Watchdog is the armed hardware watchdog.
type Watchdog struct {
	Device   string `json:"device"`   // /dev/watchdog0
	Identity string `json:"identity"` // the driver's name: "i6300ESB timer"
	// TimeoutS is what the device reports: without a keep-alive for this
	// long, the board resets.
	TimeoutS int `json:"timeout_s"`
	// State is "armed" (kept alive), "shutdown" (keep-alives stopped; the
	// shutdown must end within TimeoutS) or "disarmed" (before power-off).
	State string `json:"state"`
	// Pings counts keep-alives in this boot; LastPing is the latest.
	Pings    int       `json:"pings"`
	LastPing time.Time `json:"last_ping"`
}

// Boot describes the current boot.
type Boot struct {
	ID     string `json:"id"`     // random per boot
	Number int    `json:"number"` // 1 for the first boot of this data partition
	// KernelStart is when the kernel started (now - /proc/uptime at init start).
	KernelStart time.Time `json:"kernel_start"`
	Stages      []Stage   `json:"stages"`
	// Ready is true once every boot stage has run and services are started.
	Ready bool `json:"ready"`
	// ReadyAfter is the time from kernel start to ready.
	ReadyAfterMS int64 `json:"ready_after_ms,omitempty"`
	// FirstBoot is true when the data partition was created in this boot.
	FirstBoot bool `json:"first_boot"`
}

// Stage is one named step of the boot, in execution order. Stages run in
// the initramfs have Phase "initramfs", the rest "system".
type Stage struct {
	Name  string `json:"name"`
	Phase string `json:"phase"`
	// StartMS is the offset from kernel start; DurationMS the step's length.
	StartMS    int64  `json:"start_ms"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
	Warning    string `json:"warning,omitempty"`
	Skipped    bool   `json:"skipped,omitempty"`
}

// Config describes the cloud-config the init applied.
type Config struct {
	// Sources lists every datasource found, in merge order.
	Sources []ConfigSource `json:"sources"`
	// Hash is the SHA-256 of the merged, applied config.
	Hash string `json:"hash"`
	// Generation counts distinct applied configs on this node.
	Generation int `json:"generation"`
	// Errors lists every problem found, each naming source, line and key.
	Errors []string `json:"errors,omitempty"`
	// UsedLastGood is true when the new config was rejected and the last
	// good one applied instead.
	UsedLastGood bool `json:"used_last_good,omitempty"`
	// Confirmed: the applied generation brought a boot to health (ready,
	// and the node Ready where it runs k3s), so a later broken config
	// falls back to it. Until then it is on trial: TrialBoots counts its
	// boots, this one included.
	Confirmed  bool `json:"confirmed"`
	TrialBoots int  `json:"trial_boots,omitempty"`
	// SetAside is a newer generation that failed its trial: the last good
	// one (Generation) is applied instead until the config changes.
	SetAside int `json:"set_aside,omitempty"`
}

// ConfigSource is one datasource's contribution.
type ConfigSource struct {
	Name  string `json:"name"` // "baked", "boot-partition", "nocloud", "fw_cfg", "cmdline-url"
	Path  string `json:"path"`
	Error string `json:"error,omitempty"`
}

// Iface is a network interface and its addresses (CIDR form).
type Iface struct {
	Name      string   `json:"name"`
	MAC       string   `json:"mac"`
	Up        bool     `json:"up"`
	Addresses []string `json:"addresses"`
	Method    string   `json:"method"` // "dhcp", "static", "none"
}

// Service is a supervised process.
type Service struct {
	Name     string    `json:"name"`
	State    string    `json:"state"` // "starting", "running", "backoff", "stopped", "failed"
	PID      int       `json:"pid,omitempty"`
	Restarts int       `json:"restarts"`
	Since    time.Time `json:"since"`
	LastExit string    `json:"last_exit,omitempty"`
}

// Memory figures, in bytes.
type Memory struct {
	Total     uint64 `json:"total"`
	Available uint64 `json:"available"`
	// Used is Total - Available, as procps 4's free(1) reports "used": it
	// includes the kernel's watermark reserves, which grow with memory.
	Used uint64 `json:"used"`
	// Free and Cache (buffers, page cache, reclaimable slab) give the
	// older view: UsedNoCache = Total - Free - Cache.
	Free        uint64 `json:"free"`
	Cache       uint64 `json:"cache"`
	UsedNoCache uint64 `json:"used_no_cache"`
	InitRSS     uint64 `json:"init_rss"`
}

// Mount is a mounted file system of interest (root, data, boot).
type Mount struct {
	Target string `json:"target"`
	Source string `json:"source"`
	FSType string `json:"fstype"`
	Size   uint64 `json:"size"`
	Free   uint64 `json:"free"`
}

// Cgroups reports the cgroup v2 controllers found at the root.
type Cgroups struct {
	Version     int      `json:"version"`
	Controllers []string `json:"controllers"`
	Missing     []string `json:"missing,omitempty"`
}

// Node is the Kubernetes node's state.
type Node struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
	// Stages are the runtime's milestones in this boot (phase "runtime"):
	// "runtime-start" (the k3s process started), "api" (/readyz answers
	// ok), "node-registered", "node-ready"; StartMS is when each was first
	// seen, from kernel start, and DurationMS the time since the previous one.
	Stages []Stage `json:"stages,omitempty"`
	// Error is the last failure asking the API server (while not Ready).
	Error string `json:"error,omitempty"`
	// CertExpires is when the first of the runtime's certificates expires
	// (CertFile); the console warns when it is under 30 days away.
	CertExpires time.Time `json:"cert_expires,omitzero"`
	CertFile    string    `json:"cert_file,omitempty"`
}

// LogsParams asks for the last Lines lines of a log ("console" for the
// init's own log, or a service name).
type LogsParams struct {
	Name  string `json:"name"`
	Lines int    `json:"lines"`
}

// Logs is the answer to MethodLogs.
type Logs struct {
	Name  string   `json:"name"`
	Lines []string `json:"lines"`
}

// ExecParams runs a command (privileged). Argv[0] is looked up on PATH.
type ExecParams struct {
	Argv    []string `json:"argv"`
	Stdin   string   `json:"stdin,omitempty"`
	Env     []string `json:"env,omitempty"`
	Timeout int      `json:"timeout_s,omitempty"` // default 60
}

// ExecResult is the answer to MethodExec.
type ExecResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}
