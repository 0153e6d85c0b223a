"""opsdb.storage"""
