# A Hetzner Cloud firewall that opens only SSH, HTTP and HTTPS on a server's public side
# (Hetzner's firewalls leave private networks alone). Used by single-box and cluster.
terraform {
  required_providers {
    hcloud = {
      source = "hetznercloud/hcloud"
    }
  }
}

variable "name" {
  description = "The firewall's name."
  type        = string
}

resource "hcloud_firewall" "web" {
  name = var.name

  dynamic "rule" {
    for_each = ["22", "80", "443"]
    content {
      direction  = "in"
      protocol   = "tcp"
      port       = rule.value
      source_ips = ["0.0.0.0/0", "::/0"]
    }
  }
}

output "id" {
  value = hcloud_firewall.web.id
}
