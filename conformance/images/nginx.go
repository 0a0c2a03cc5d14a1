package images

import (
	"context"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// nginxConf and nginxDefault are the official nginx image's
// /etc/nginx/nginx.conf and conf.d/default.conf, which upstream's
// test/images/nginx takes as they are: workers as user nginx, the welcome
// page on port 80 (IPv4 and IPv6), logs to the container's output.
const (
	nginxConf = `user  nginx;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /run/nginx.pid;


events {
    worker_connections  1024;
}


http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    sendfile        on;
    #tcp_nopush     on;

    keepalive_timeout  65;

    #gzip  on;

    include /etc/nginx/conf.d/*.conf;
}
`
	nginxDefault = `server {
    listen       80;
    listen  [::]:80;
    server_name  localhost;

    #access_log  /var/log/nginx/host.access.log  main;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }

    #error_page  404              /404.html;

    # redirect server error pages to the static page /50x.html
    #
    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
`
	nginx50x = `<!DOCTYPE html>
<html>
<head>
<title>Error</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>An error occurred.</h1>
<p>Sorry, the page you are looking for is currently unavailable.<br/>
Please try again later.</p>
<p>If you are the system administrator of this resource then you should check
the error log for details.</p>
<p><em>Faithfully yours, nginx.</em></p>
</body>
</html>
`
)

// nginxPackages are Debian's nginx; the shell Alpine's nginx image has is
// busybox, compiled here as the busybox image's.
var nginxPackages = []string{"nginx"}

// nginx is the official nginx image on Alpine, which upstream's
// test/images/nginx and nginx-new are, with Debian's nginx: its config,
// welcome page, user nginx (uid 101), logs linked to the container's
// output, CMD ["nginx", "-g", "daemon off;"], STOPSIGNAL SIGQUIT. Upstream's
// ENTRYPOINT, /docker-entrypoint.sh, only runs the optional scripts of
// /docker-entrypoint.d (templates filled from the environment, worker
// tuning), which no test gives it; nginx starts directly.
//
// Debian's nginx package depends on iproute2, which the nginx program
// never runs; it is left out.
func (b *builder) nginx(ctx context.Context) (ociimage.Image, string, error) {
	in, err := b.src.packages(ctx, nginxPackages, append([]string{"iproute2"}, scriptOnly...))
	if err != nil {
		return ociimage.Image{}, "", err
	}
	t := in.tree
	passwd := alpinePasswd + "nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n"
	group := alpineGroup + "nginx:x:101:nginx\n"
	if err := addBase(t, passwd, group); err != nil {
		return ociimage.Image{}, "", err
	}
	bb, bbFrom, err := b.src.busybox(ctx)
	if err != nil {
		return ociimage.Image{}, "", err
	}
	if err := addShell(t, bb); err != nil {
		return ociimage.Image{}, "", err
	}
	// Debian's layout of sites and snippets, which the official config
	// does not read.
	for _, d := range []string{"sites-available", "sites-enabled", "snippets", "modules-available", "modules-enabled"} {
		t.Remove("etc/nginx/" + d)
	}
	for _, e := range []filetree.Entry{
		{Path: "etc/nginx/nginx.conf", Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(nginxConf)},
		{Path: "etc/nginx/conf.d/default.conf", Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(nginxDefault)},
		{Path: "usr/share/nginx/html/50x.html", Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(nginx50x)},
		{Path: "etc/nsswitch.conf", Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(nsswitch)},
		{Path: "var/log/nginx", Kind: filetree.Dir, Mode: 0o755},
		{Path: "var/log/nginx/access.log", Kind: filetree.Symlink, Mode: 0o777, Target: "/dev/stdout"},
		{Path: "var/log/nginx/error.log", Kind: filetree.Symlink, Mode: 0o777, Target: "/dev/stderr"},
		// Debian's nginx keeps request bodies and proxied responses
		// under /var/lib/nginx; the master makes the folders in it
		// for the workers. The official image's /var/cache/nginx is
		// user nginx's home.
		{Path: "var/lib/nginx", Kind: filetree.Dir, Mode: 0o755},
		{Path: "var/cache/nginx", Kind: filetree.Dir, Mode: 0o755, UID: 101, GID: 101},
		{Path: "run", Kind: filetree.Dir, Mode: 0o755},
	} {
		if err := t.Add(e); err != nil {
			return ociimage.Image{}, "", err
		}
	}
	img, err := image(t, ociimage.Config{Cmd: []string{"nginx", "-g", "daemon off;"}, StopSignal: "SIGQUIT"})
	return img, "Debian " + in.versions("nginx", "nginx-common") + "; " + bbFrom, err
}
