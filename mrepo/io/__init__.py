"""mrepo.io"""
