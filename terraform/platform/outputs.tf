output "router_job" {
  description = "The router's Nomad job (a system job: one instance on every client node)."
  value       = nomad_job.router.id
}

output "consul_policies" {
  description = "The Consul ACL policies made, by the file each comes from."
  value       = { for key, policy in consul_acl_policy.billowin : key => policy.name }
}

output "nomad_router_policy" {
  description = "The router's Nomad ACL policy."
  value       = nomad_acl_policy.router.name
}
