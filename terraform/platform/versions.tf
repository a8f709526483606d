terraform {
  required_version = ">= 1.6"
  required_providers {
    nomad = {
      source  = "hashicorp/nomad"
      version = "~> 2.0"
    }
    consul = {
      source  = "hashicorp/consul"
      version = "~> 2.23"
    }
  }
}

provider "nomad" {
  address   = var.nomad_address
  secret_id = var.nomad_token
}

provider "consul" {
  address = var.consul_address
  token   = var.consul_token
}
