variable "hcloud_token" {
  description = "A Hetzner Cloud API token (read and write) of the project the box goes in."
  type        = string
  sensitive   = true
}

variable "name" {
  description = "The server's name in Hetzner Cloud."
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
