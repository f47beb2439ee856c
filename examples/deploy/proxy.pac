// Proxy auto-config (PAC) for sending a site's web traffic through sluice.
// Publish it (e.g. http://wpad.corp.example/proxy.pac) and point browsers
// and OSes at it by policy (GPO, MDM, or DHCP/DNS WPAD).
//
// sluice's forward proxy listens on proxy.listen (default 127.0.0.1:3128;
// see examples/deploy/sluice.yaml for a network listener). Port 8080 is the
// gateway, for apps that set a base URL, not the proxy port.
//
// Fallback: "PROXY ...; DIRECT" lets a browser go direct when sluice is
// unreachable. That keeps people working during an outage but is also a way
// around the monitor; an organisation that must see every AI call drops
// "; DIRECT" and enforces the proxy at the firewall (only sluice may reach
// ports 80/443 outside). A sluice refusal (403) is an answer, not an
// outage: browsers do not fall back to DIRECT on it.

var SLUICE = "PROXY sluice.corp.example:3128";
var FALLBACK = "; DIRECT";

function FindProxyForURL(url, host) {
    host = host.toLowerCase();

    // Plain host names (intranet shortcuts) and the machine itself.
    if (isPlainHostName(host) ||
        host === "localhost" || shExpMatch(host, "*.localhost") ||
        shExpMatch(host, "*.local") || shExpMatch(host, "*.corp.example")) {
        return "DIRECT";
    }

    // Literal private, loopback and link-local addresses. Checked on the
    // text only: resolving every host here (isInNet on a name) would cost a
    // DNS lookup per request in the browser.
    if (/^\d+\.\d+\.\d+\.\d+$/.test(host) &&
        (isInNet(host, "10.0.0.0", "255.0.0.0") ||
         isInNet(host, "172.16.0.0", "255.240.0.0") ||
         isInNet(host, "192.168.0.0", "255.255.0.0") ||
         isInNet(host, "127.0.0.0", "255.0.0.0") ||
         isInNet(host, "169.254.0.0", "255.255.0.0") ||
         isInNet(host, "100.64.0.0", "255.192.0.0"))) {
        return "DIRECT";
    }
    // IPv6 literals: loopback, unique-local and link-local.
    if (host === "::1" || host === "[::1]" ||
        shExpMatch(host, "fc*:*") || shExpMatch(host, "fd*:*") || shExpMatch(host, "fe80:*") ||
        shExpMatch(host, "[fc*") || shExpMatch(host, "[fd*") || shExpMatch(host, "[fe80:*")) {
        return "DIRECT";
    }

    // Everything else, http and https alike: sluice tunnels what it does
    // not intercept and sees which AI services are reached. sluice only
    // connects to ports in proxy.allowed_ports (443 by default; add 80 for
    // plain HTTP, as sluice.yaml here does) and refuses internal addresses
    // unless proxy.allow_private lists them, which is why they go DIRECT.
    return SLUICE + FALLBACK;
}
