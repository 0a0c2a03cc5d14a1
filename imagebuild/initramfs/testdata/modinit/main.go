// Command modinit is a stand-in /init for TestBootDebianKernel: it loads
// the modules listed in /etc/ballast/modules.load the way the ballast init
// does, reports on the console and powers off.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	fmt.Println("modinit: started")
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		fmt.Println("modinit: mount /proc:", err)
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	kver := unix.ByteSliceToString(uts.Release[:])
	paths := map[string]string{}
	if b, err := os.ReadFile("/etc/ballast/modules.paths"); err == nil {
		for line := range strings.Lines(string(b)) {
			if name, p, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
				paths[name] = p
			}
		}
	}
	f, err := os.Open("/etc/ballast/modules.load")
	if err != nil {
		fmt.Println("modinit: FAIL", err)
		poweroff()
	}
	loaded, failed := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := sc.Text()
		m, err := os.Open("/lib/modules/" + kver + "/" + paths[name])
		if err == nil {
			err = unix.FinitModule(int(m.Fd()), "", 0)
			m.Close()
		}
		if err != nil && err != unix.EEXIST {
			fmt.Printf("modinit: FAIL %s: %v\n", name, err)
			failed++
			continue
		}
		loaded++
	}
	fs, _ := os.ReadFile("/proc/filesystems")
	for _, want := range []string{"squashfs", "ext4", "vfat", "overlay"} {
		if !strings.Contains(string(fs), "\t"+want+"\n") {
			fmt.Printf("modinit: FAIL file system %s not available\n", want)
			failed++
		}
	}
	fmt.Printf("modinit: loaded %d modules, %d failures\n", loaded, failed)
	poweroff()
}

func poweroff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
