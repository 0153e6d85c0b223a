"""opsdb.repo"""
