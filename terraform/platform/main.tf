# The platform layer on a Nomad and Consul you already run: Billowin's ACL policies, and the
# router on every client node as a Nomad system job.
#
# The policies are read from the same files `billowin install` makes them from
# (billowin/stack/policies/), so the two never drift. An app's own Nomad policy (its job reads
# its config vars, nothing else) is made by Billowin at each deploy, bound to the job.

locals {
  policies = "${path.module}/../../billowin/stack/policies"
  consul_policies = {
    for file in fileset("${local.policies}/consul", "*.json") : trimsuffix(file, ".json") => file
  }
}

resource "consul_acl_policy" "billowin" {
  for_each    = local.consul_policies
  name        = replace(each.key, "/^billowin/", var.name_prefix)
  description = "made by terraform/platform (billowin/stack/policies/consul/${each.value})"
  rules       = file("${local.policies}/consul/${each.value}")
}

resource "nomad_acl_policy" "router" {
  name        = "${var.name_prefix}-router"
  description = "made by terraform/platform: the router reads jobs and nodes"
  rules_hcl   = file("${local.policies}/nomad/billowin-router.hcl")
}

resource "nomad_job" "router" {
  jobspec = templatefile("${path.module}/router.nomad.hcl.tftpl", {
    name        = "${var.name_prefix}-router"
    datacenters = jsonencode(var.datacenters)
    haproxy     = jsonencode(var.haproxy)
    env = {
      BILLOWIN_DOMAIN              = var.domain
      BILLOWIN_ROUTER_BIND         = ":${var.router_http_port}"
      BILLOWIN_ROUTER_STATS_BIND   = "127.0.0.1:${var.router_stats_port}"
      BILLOWIN_ROUTER_ROUTES_MAP   = "/local/routes.map"
      BILLOWIN_ROUTER_SLOTS        = tostring(var.router_slots)
      BILLOWIN_HAPROXY_SOCKET      = "/local/haproxy.sock"
      BILLOWIN_ROUTER_SERVER_STATE = "/local/servers.state"
      BILLOWIN_CONSUL_DNS_PORT     = tostring(var.consul_dns_port)
    }
    # Billowin's own router template, as consul-template renders it on a Billowin box; Nomad's
    # template block is consul-template too. The routes map is what billowin/router/reload.py
    # writes from that template's "# route" lines.
    config = jsonencode(file("${path.module}/../../billowin/router/haproxy.cfg.ctmpl"))
    routes = jsonencode(file("${path.module}/routes.map.ctmpl"))
  })
  purge_on_destroy = true
  detach           = false # apply returns once the router runs on every node
}
