"""opsdb.render"""
