"""mrepo.graph"""
