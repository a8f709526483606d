variable "hcloud_token" {
  description = "A Hetzner Cloud API token (read and write) of the project the box goes in."
  type        = string
  sensitive   = true
}

variable "name" {
  description = "The nodes are named <name>-1, <name>-2…"
  type        = string
  default     = "billowin"
  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.name))
    error_message = "A DNS label: lowercase letters, digits and '-'."
  }
}

variable "domain" {
  description = "Apps answer at <app>.<domain>; point *.<domain> at the box (the dns_records output)."
  type        = string
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain))
    error_message = "A domain name like apps.example.com (lowercase)."
  }
}

variable "server_type" {
  description = "The smallest type that fits Billowin and a few apps: CX22 (2 vCPU, 4 GB)."
  type        = string
  default     = "cx22"
}

variable "location" {
  description = "Hetzner location: fsn1, nbg1 or hel1 (EU, cheapest), ash or hil (US), sin."
  type        = string
  default     = "fsn1"
}

variable "image" {
  description = "The operating system: Debian, as Billowin's own packages come from Debian."
  type        = string
  default     = "debian-12"
}

variable "ssh_keys" {
  description = "Names or ids of SSH keys already in the Hetzner project, for root's login."
  type        = list(string)
  default     = []
}

variable "billowin_repository" {
  description = "The git repository `billowin install` is run from (cloned to /opt/billowin)."
  type        = string
  validation {
    condition     = can(regex("^https://[A-Za-z0-9._~:/@%+-]+$", var.billowin_repository))
    error_message = "An https:// git URL."
  }
}

variable "billowin_ref" {
  description = "The branch or tag of that repository to install."
  type        = string
  default     = "main"
  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]{1,100}$", var.billowin_ref)) && !startswith(var.billowin_ref, "-")
    error_message = "A branch or tag name."
  }
}

variable "nodes" {
  description = "How many nodes: the first ones are servers (Raft), the rest clients."
  type        = number
  default     = 3
  validation {
    condition     = var.nodes >= 1 && var.nodes <= 50
    error_message = "Between 1 and 50 nodes."
  }
}

variable "servers" {
  description = "How many of the nodes are servers: 3 survive the loss of one (1 or 3, or 5)."
  type        = number
  default     = 3
  validation {
    condition     = contains([1, 3, 5], var.servers)
    error_message = "1, 3 or 5 servers (an odd number keeps a Raft majority)."
  }
}

variable "private_interface" {
  description = "The nodes' interface on the private network (Hetzner names it enp7s0 on current types)."
  type        = string
  default     = "enp7s0"
  validation {
    condition     = can(regex("^[a-z0-9]{1,15}$", var.private_interface))
    error_message = "An interface name like enp7s0."
  }
}

variable "network_zone" {
  description = "The private network's zone, matching the location (eu-central, us-east, us-west, ap-southeast)."
  type        = string
  default     = "eu-central"
}

variable "ssh_private_key" {
  description = "The SSH private key (its text) Terraform joins the nodes with; null: the SSH agent's."
  type        = string
  sensitive   = true
  default     = null
}
