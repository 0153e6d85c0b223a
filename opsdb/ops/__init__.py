"""opsdb.ops"""
