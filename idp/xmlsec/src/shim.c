/* The IdP's only C: a narrow shim over libxml2 and libxmlsec1 (1.2.x, OpenSSL back end).
 *
 * Written by hand because no maintained crate does this (the `xmlsec` crate signs and
 * verifies only, without reference or algorithm restrictions, and needs libclang; `samael`
 * has the signature-wrapping hole PROFILES.md describes), and because what we must set
 * (the verification context's key, flags and allowed URIs) and read (its status and the
 * reference it checked) are fields of large structs whose layout depends on Debian's build
 * defines: compiled against the real headers, this file gets them right by construction.
 * Rust (src/lib.rs) sees only opaque pointers, byte buffers and integer results.
 *
 * Every function returns 0 on success or a negative TX_E_* code; the text of the last
 * failure on this thread is in tx_last_error().
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/valid.h>
#include <libxml/c14n.h>
#include <xmlsec/xmlsec.h>
#include <xmlsec/xmltree.h>
#include <xmlsec/xmldsig.h>
#include <xmlsec/xmlenc.h>
#include <xmlsec/templates.h>
#include <xmlsec/crypto.h>
#include <xmlsec/errors.h>
#include <xmlsec/base64.h>
#include <xmlsec/membuf.h>

#define TX_E_INIT -1
#define TX_E_TOO_LARGE -2
#define TX_E_DOCTYPE -3
#define TX_E_MALFORMED -4
#define TX_E_DUPLICATE_ID -5
#define TX_E_SIGNATURE_SHAPE -6
#define TX_E_BAD_KEY -7
#define TX_E_SIGNATURE_INVALID -8
#define TX_E_NOT_ROOT -9
#define TX_E_INTERNAL -10
#define TX_E_NO_ELEMENT -11

#define SAML_NS "urn:oasis:names:tc:SAML:2.0:assertion"

/* ---------- keys, parsed once ---------- */

/* OpenSSL 3 parses keys through its decoder framework, which costs more than the
 * signature itself: every Response would pay it three times (the throwaway key, our
 * certificate for the check after signing, the relying party's certificate). Keys are
 * parsed once per distinct DER and handed out as new keys holding a duplicate of the key
 * value only (a reference to the same EVP_PKEY, which OpenSSL lets threads use at once;
 * not the certificate, whose copy would be parsed again — nothing reads it: the contexts
 * get the key directly and our templates write no KeyInfo from it; one that did would
 * need the certificate copied too). A table evicting the least recently used entry: our
 * own certificate and throwaway keys, used for every Response, stay; an attacker making
 * us try many relying parties' certificates only evicts colder ones (the keys are
 * public, or our throwaway ones). */
#define TX_KEY_CACHE 64
static struct {
    unsigned char *der;
    size_t len;
    int format;
    xmlSecKeyPtr key;
    unsigned long used;
} tx_keys[TX_KEY_CACHE];
static unsigned long tx_keys_tick;
static pthread_mutex_t tx_keys_lock = PTHREAD_MUTEX_INITIALIZER;

/* A new key holding a duplicate of `from`'s value, or NULL. */
static xmlSecKeyPtr tx_value_copy(xmlSecKeyPtr from) {
    xmlSecKeyDataPtr v = xmlSecKeyGetValue(from);
    xmlSecKeyDataPtr dup = v ? xmlSecKeyDataDuplicate(v) : NULL;
    if (!dup) return NULL;
    xmlSecKeyPtr k = xmlSecKeyCreate();
    if (!k || xmlSecKeySetValue(k, dup) < 0) {
        xmlSecKeyDataDestroy(dup);
        if (k) xmlSecKeyDestroy(k);
        return NULL;
    }
    return k;
}

/* The entry holding this DER in this format, or -1 (the lock held). */
static long tx_key_find(const unsigned char *der, size_t len, xmlSecKeyDataFormat format) {
    for (size_t i = 0; i < TX_KEY_CACHE; i++)
        if (tx_keys[i].key && tx_keys[i].format == (int)format && tx_keys[i].len == len &&
            memcmp(tx_keys[i].der, der, len) == 0)
            return (long)i;
    return -1;
}

/* A key of its own (the caller destroys it, or gives it to a context that does), or NULL. */
static xmlSecKeyPtr tx_key(const unsigned char *der, size_t len, xmlSecKeyDataFormat format) {
    pthread_mutex_lock(&tx_keys_lock);
    long hit = tx_key_find(der, len, format);
    if (hit >= 0) {
        tx_keys[hit].used = ++tx_keys_tick;
        xmlSecKeyPtr out = tx_value_copy(tx_keys[hit].key);
        pthread_mutex_unlock(&tx_keys_lock);
        return out;
    }
    pthread_mutex_unlock(&tx_keys_lock);
    xmlSecKeyPtr key = xmlSecCryptoAppKeyLoadMemory(der, (xmlSecSize)len, format, NULL, NULL, NULL);
    if (!key) return NULL;
    xmlSecKeyPtr mine = tx_value_copy(key);
    unsigned char *copy = (unsigned char *)malloc(len ? len : 1);
    if (!mine || !copy) {
        free(copy);
        if (mine) xmlSecKeyDestroy(mine);
        return key;
    }
    memcpy(copy, der, len);
    xmlSecKeyPtr kept = key;
    key = mine;
    pthread_mutex_lock(&tx_keys_lock);
    if (tx_key_find(der, len, format) >= 0) {
        /* Another thread put it there meanwhile: keep theirs. */
        pthread_mutex_unlock(&tx_keys_lock);
        free(copy);
        xmlSecKeyDestroy(kept);
        return key;
    }
    size_t slot = 0;
    for (size_t i = 0; i < TX_KEY_CACHE; i++) {
        if (!tx_keys[i].key) {
            slot = i;
            break;
        }
        if (tx_keys[i].used < tx_keys[slot].used) slot = i;
    }
    unsigned char *old_der = tx_keys[slot].der;
    xmlSecKeyPtr old_key = tx_keys[slot].key;
    tx_keys[slot].der = copy;
    tx_keys[slot].len = len;
    tx_keys[slot].format = (int)format;
    tx_keys[slot].key = kept;
    tx_keys[slot].used = ++tx_keys_tick;
    pthread_mutex_unlock(&tx_keys_lock);
    free(old_der);
    if (old_key) xmlSecKeyDestroy(old_key);
    return key;
}

/* ---------- errors, per thread ---------- */

static __thread char tx_errors[2048];
static __thread size_t tx_errors_len;

static void tx_note(const char *fmt, const char *a, const char *b) {
    if (tx_errors_len >= sizeof(tx_errors) - 1) return;
    int n = snprintf(tx_errors + tx_errors_len, sizeof(tx_errors) - tx_errors_len, fmt,
                     a ? a : "", b ? b : "");
    if (n > 0) tx_errors_len += (size_t)n;
    if (tx_errors_len >= sizeof(tx_errors)) tx_errors_len = sizeof(tx_errors) - 1;
}

static void tx_clear(void) {
    tx_errors_len = 0;
    tx_errors[0] = 0;
}

const char *tx_last_error(void) { return tx_errors; }

static void tx_xmlsec_error(const char *file, int line, const char *func, const char *object,
                            const char *subject, int reason, const char *msg) {
    (void)file; (void)line; (void)object; (void)reason;
    tx_note("xmlsec %s: %s; ", func, msg ? msg : subject);
}

static void tx_xml_error(void *ctx, xmlErrorPtr e) {
    (void)ctx;
    if (e && e->message) tx_note("libxml2: %s%s", e->message, "");
}

/* ---------- set-up, once per process (Rust calls it under a Once) ---------- */

int tx_init(void) {
    xmlInitParser();
    /* Never the xmlsec examples' xmlLoadExtDtdDefaultValue or
     * xmlSubstituteEntitiesDefault(1): both are unsafe for untrusted input. */
    if (xmlSecInit() < 0) return TX_E_INIT;
    if (xmlSecCheckVersion() != 1) return TX_E_INIT;
    if (xmlSecCryptoAppInit(NULL) < 0) return TX_E_INIT;
    if (xmlSecCryptoInit() < 0) return TX_E_INIT;
    /* After xmlSecCryptoInit, which installs a callback of its own. */
    xmlSecErrorsSetCallback(tx_xmlsec_error);
    return 0;
}

/* libxml2's structured error handler is per thread: set before every operation. */
static void tx_begin(void) {
    tx_clear();
    xmlSetStructuredErrorFunc(NULL, tx_xml_error);
}

void tx_free_buffer(unsigned char *p) { xmlFree(p); }

/* ---------- parsing untrusted XML ---------- */

static void tx_deny_doctype(void *ctx, const xmlChar *name, const xmlChar *ext, const xmlChar *sys) {
    (void)name; (void)ext; (void)sys;
    xmlParserCtxtPtr c = (xmlParserCtxtPtr)ctx;
    c->_private = (void *)1;
    xmlStopParser(c);
}

/* Registers every no-namespace `ID` attribute as an ID (what `URI="#id"` resolves);
 * refuses a value that is already some other attribute's (including an `xml:id` the parser
 * registered itself): xmlSecAddIDs would ignore the duplicate silently. */
static int tx_register_ids(xmlDocPtr doc, xmlNodePtr cur, int depth) {
    if (depth > 512) return TX_E_MALFORMED;
    for (; cur; cur = cur->next) {
        if (cur->type != XML_ELEMENT_NODE) continue;
        for (xmlAttrPtr a = cur->properties; a; a = a->next) {
            if (a->ns != NULL || !xmlStrEqual(a->name, BAD_CAST "ID")) continue;
            xmlChar *v = xmlNodeListGetString(doc, a->children, 1);
            if (!v || !*v) {
                tx_note("an empty ID%s%s", "", "");
                if (v) xmlFree(v);
                return TX_E_MALFORMED;
            }
            xmlAttrPtr prev = xmlGetID(doc, v);
            int bad = (prev != NULL && prev != a) || (prev == NULL && xmlAddID(NULL, doc, v, a) == NULL);
            if (bad) tx_note("the ID %s appears more than once%s", (const char *)v, "");
            xmlFree(v);
            if (bad) return TX_E_DUPLICATE_ID;
        }
        int rc = tx_register_ids(doc, cur->children, depth + 1);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Parses a document we did not write: no DTD of any kind (refused, not ignored), no
 * entity substitution, no network, libxml2's default depth and size limits (no HUGE),
 * whitespace kept (it may be signed). */
int tx_parse(const unsigned char *buf, size_t len, size_t max, xmlDocPtr *out) {
    tx_begin();
    *out = NULL;
    if (len == 0 || len > max || len > (size_t)0x7fffffff) return TX_E_TOO_LARGE;
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt) return TX_E_INTERNAL;
    ctxt->sax->internalSubset = tx_deny_doctype;
    int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING;
    /* UTF-8 only (what the SAML bindings carry): a document declaring UTF-7 or UTF-16
     * would otherwise reach libxml2's converters. */
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, (const char *)buf, (int)len, NULL, "UTF-8", opts);
    int doctype = ctxt->_private != NULL;
    int bad = doctype || !ctxt->wellFormed || doc == NULL || doc->intSubset != NULL ||
              doc->extSubset != NULL || xmlDocGetRootElement(doc) == NULL;
    xmlFreeParserCtxt(ctxt);
    if (bad) {
        if (doc) xmlFreeDoc(doc);
        return doctype ? TX_E_DOCTYPE : TX_E_MALFORMED;
    }
    int rc = tx_register_ids(doc, xmlDocGetRootElement(doc), 0);
    if (rc < 0) {
        xmlFreeDoc(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

void tx_free_doc(xmlDocPtr doc) {
    if (doc) xmlFreeDoc(doc);
}

/* The document as bytes (UTF-8, with the XML declaration). */
int tx_dump(xmlDocPtr doc, unsigned char **out, size_t *len) {
    tx_begin();
    xmlChar *mem = NULL;
    int size = 0;
    xmlDocDumpMemoryEnc(doc, &mem, &size, "UTF-8");
    if (!mem || size < 0) return TX_E_INTERNAL;
    *out = mem;
    *len = (size_t)size;
    return 0;
}

/* Exclusive canonical form (no comments) of the whole document: what an unsigned request
 * is read from, so that it is read exactly as a signed one would have been digested. */
int tx_canonical(xmlDocPtr doc, unsigned char **out, size_t *len) {
    tx_begin();
    xmlChar *mem = NULL;
    int size = xmlC14NDocDumpMemory(doc, NULL, XML_C14N_EXCLUSIVE_1_0, NULL, 0, &mem);
    if (size < 0 || !mem) return TX_E_INTERNAL;
    *out = mem;
    *len = (size_t)size;
    return 0;
}

/* ---------- verifying an enveloped signature over the root ---------- */

/* Conservative ID syntax: [A-Za-z_][A-Za-z0-9_.-]*. xmlsec turns "#x" into an XPointer
 * expression by formatting; anything else (quotes, spaces) could change what it selects. */
static int tx_plain_id(const xmlChar *s) {
    if (!s || !*s) return 0;
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == '-'))
            return 0;
    return 1;
}

static xmlNodePtr tx_only_child(xmlNodePtr parent, const xmlChar *name, const xmlChar *ns, int *count) {
    xmlNodePtr found = NULL;
    *count = 0;
    for (xmlNodePtr c = parent ? parent->children : NULL; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && xmlSecCheckNodeName(c, name, ns)) {
            found = c;
            (*count)++;
        }
    return found;
}

/* The reference's transform chain as xmlsec built it, checked before it runs: exactly
 * (the same-document XPointer,) enveloped, exclusive c14n, then only xmlsec's buffers and
 * SHA-256. The allow-lists only cover <Transform> elements; xmlsec adds an inclusive c14n
 * (or its own XML parser) by itself where a chain leaves the node set unserialised. */
static int tx_check_chain(xmlSecTransformCtxPtr t) {
    xmlSecTransformId want[] = {xmlSecTransformXPointerId, xmlSecTransformEnvelopedId, xmlSecTransformExclC14NId};
    xmlSecTransformPtr x = t->first;
    size_t i = 0;
    if (x && x->id != xmlSecTransformXPointerId) i = 1; /* URI="": no XPointer */
    for (; i < 3; i++, x = x->next)
        if (!x || x->id != want[i]) {
            tx_note("the reference's transforms are not exactly enveloped, exclusive c14n%s%s", "", "");
            return -1;
        }
    for (; x; x = x->next)
        if (x->id != xmlSecTransformMemBufId && x->id != xmlSecTransformSha256Id) {
            tx_note("an unexpected transform %s%s", (const char *)x->id->name, "");
            return -1;
        }
    return 0;
}

/* Whether any element under `node` carries a namespaced attribute: xmlsec reads URI and
 * Algorithm with xmlGetProp, which takes the first attribute of that name in any
 * namespace, while our checks read the no-namespace one. XML-DSig needs none. */
static int tx_namespaced_attributes(xmlNodePtr node) {
    for (; node; node = node->next) {
        if (node->type != XML_ELEMENT_NODE) continue;
        for (xmlAttrPtr a = node->properties; a; a = a->next)
            if (a->ns != NULL) return 1;
        if (tx_namespaced_attributes(node->children)) return 1;
    }
    return 0;
}

/* Verifies the signature of the document's root with the certificate `cert` (DER) only,
 * and returns the bytes its one reference digested (the root in exclusive canonical form,
 * without the signature): the caller reads the message from those, never from the tree.
 *
 * The shape is checked before xmlsec runs (PROFILES.md): exactly one ds:Signature, a
 * direct child of the root; exactly one Reference, whose URI is "#" + the root's ID (or
 * "" when `whole_document_uri` allows it, as metadata aggregates sign); then only exclusive
 * c14n, enveloped and SHA-256, RSA-SHA256 or ECDSA-SHA256; the key only the one given
 * (no keys manager: KeyInfo is never read); after it, the referenced element is checked to
 * be the root. */
int tx_verify_root(xmlDocPtr doc, const unsigned char *cert, size_t cert_len, int whole_document_uri,
                   unsigned char **signed_out, size_t *signed_len) {
    tx_begin();
    *signed_out = NULL;
    *signed_len = 0;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    int n = 0;
    xmlNodePtr sig = tx_only_child(root, xmlSecNodeSignature, xmlSecDSigNs, &n);
    if (n != 1) {
        tx_note("the root must carry exactly one signature as a direct child%s%s", "", "");
        return TX_E_SIGNATURE_SHAPE;
    }
    xmlNodePtr si = tx_only_child(sig, xmlSecNodeSignedInfo, xmlSecDSigNs, &n);
    if (n != 1) return TX_E_SIGNATURE_SHAPE;
    if (tx_namespaced_attributes(si)) {
        tx_note("a namespaced attribute inside SignedInfo%s%s", "", "");
        return TX_E_SIGNATURE_SHAPE;
    }
    xmlNodePtr ref = tx_only_child(si, xmlSecNodeReference, xmlSecDSigNs, &n);
    if (n != 1) {
        tx_note("the signature must have exactly one reference%s%s", "", "");
        return TX_E_SIGNATURE_SHAPE;
    }
    xmlChar *root_id = xmlGetNoNsProp(root, BAD_CAST "ID");
    xmlChar *uri = xmlGetNoNsProp(ref, BAD_CAST "URI");
    int shape_ok;
    if (uri && uri[0] == 0)
        shape_ok = whole_document_uri;
    else
        shape_ok = uri && root_id && tx_plain_id(root_id) && uri[0] == '#' && xmlStrEqual(uri + 1, root_id);
    if (uri) xmlFree(uri);
    if (!shape_ok) {
        tx_note("the reference must name the root by its ID (%s)%s", root_id ? (const char *)root_id : "none", "");
        if (root_id) xmlFree(root_id);
        return TX_E_SIGNATURE_SHAPE;
    }

    int rc = TX_E_INTERNAL;
    xmlSecDSigCtxPtr ctx = xmlSecDSigCtxCreate(NULL);
    if (!ctx) goto out;
    ctx->signKey = tx_key(cert, cert_len, xmlSecKeyDataFormatCertDer);
    if (!ctx->signKey) {
        rc = TX_E_BAD_KEY;
        goto out;
    }
    {
        /* RSA of at least 2048 bits (PROFILES.md); the Rust side checks EC curves, which
         * xmlsec 1.2 does not size. */
        xmlSecKeyDataPtr v = xmlSecKeyGetValue(ctx->signKey);
        int rsa = v && xmlSecKeyDataCheckId(v, xmlSecKeyDataRsaId);
        if (!v || (rsa && xmlSecKeyDataGetSize(v) < 2048)) {
            tx_note("the certificate's key is too weak or of an unknown kind%s%s", "", "");
            rc = TX_E_BAD_KEY;
            goto out;
        }
    }
    ctx->referencePreExecuteCallback = tx_check_chain;
    ctx->flags = XMLSEC_DSIG_FLAGS_IGNORE_MANIFESTS | XMLSEC_DSIG_FLAGS_STORE_SIGNEDINFO_REFERENCES;
    ctx->enabledReferenceUris = (xmlSecTransformUriType)(xmlSecTransformUriTypeSameDocument |
                                                         (whole_document_uri ? xmlSecTransformUriTypeEmpty : 0));
    if (xmlSecDSigCtxEnableSignatureTransform(ctx, xmlSecTransformExclC14NId) < 0 ||
        xmlSecDSigCtxEnableSignatureTransform(ctx, xmlSecTransformRsaSha256Id) < 0 ||
        xmlSecDSigCtxEnableSignatureTransform(ctx, xmlSecTransformEcdsaSha256Id) < 0 ||
        xmlSecDSigCtxEnableReferenceTransform(ctx, xmlSecTransformEnvelopedId) < 0 ||
        xmlSecDSigCtxEnableReferenceTransform(ctx, xmlSecTransformExclC14NId) < 0 ||
        xmlSecDSigCtxEnableReferenceTransform(ctx, xmlSecTransformSha256Id) < 0)
        goto out;
    if (xmlSecDSigCtxVerify(ctx, sig) < 0 || ctx->status != xmlSecDSigStatusSucceeded) {
        rc = TX_E_SIGNATURE_INVALID;
        goto out;
    }
    if (xmlSecPtrListGetSize(&ctx->signedInfoReferences) != 1) {
        rc = TX_E_SIGNATURE_SHAPE;
        goto out;
    }
    xmlSecDSigReferenceCtxPtr r = (xmlSecDSigReferenceCtxPtr)xmlSecPtrListGetItem(&ctx->signedInfoReferences, 0);
    if (!r || r->status != xmlSecDSigStatusSucceeded) {
        rc = TX_E_SIGNATURE_INVALID;
        goto out;
    }
    /* Which element did the reference cover? Looked up in the same ID table xmlsec used. */
    if (r->uri && r->uri[0] == '#') {
        xmlAttrPtr id = xmlGetID(doc, r->uri + 1);
        if (!id || id->parent != root || id->ns != NULL || !xmlStrEqual(id->name, BAD_CAST "ID")) {
            rc = TX_E_NOT_ROOT;
            goto out;
        }
    } else if (!(whole_document_uri && r->uri == NULL) && !(whole_document_uri && r->uri && r->uri[0] == 0)) {
        rc = TX_E_NOT_ROOT;
        goto out;
    }
    xmlSecBufferPtr digested = xmlSecDSigReferenceCtxGetPreDigestBuffer(r);
    if (!digested || xmlSecBufferGetSize(digested) == 0) goto out;
    xmlSecSize size = xmlSecBufferGetSize(digested);
    unsigned char *copy = (unsigned char *)xmlMalloc(size);
    if (!copy) goto out;
    memcpy(copy, xmlSecBufferGetData(digested), size);
    *signed_out = copy;
    *signed_len = size;
    rc = 0;
out:
    if (ctx) xmlSecDSigCtxDestroy(ctx); /* frees signKey too */
    if (root_id) xmlFree(root_id);
    return rc;
}

/* ---------- signing, with the private key elsewhere (a PKCS#11 token) ---------- */

/* Adds an enveloped signature template over the root (by its ID), right after the root's
 * saml:Issuer child if it has one (the SAML schema's place), else as its first child; has
 * xmlsec compute the digest and the canonical SignedInfo with `dummy` (a throwaway
 * software key of the real key's type, PKCS#8 DER), and returns that canonical SignedInfo:
 * the bytes the real key must sign. The dummy's signature value is replaced by
 * tx_set_signature, and the result is verified with the real certificate before use. */
int tx_presign(xmlDocPtr doc, int ecdsa, const unsigned char *dummy, size_t dummy_len,
               unsigned char **out, size_t *len) {
    tx_begin();
    *out = NULL;
    *len = 0;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    xmlChar *id = xmlGetNoNsProp(root, BAD_CAST "ID");
    if (!id || !tx_plain_id(id)) {
        if (id) xmlFree(id);
        return TX_E_NO_ELEMENT;
    }
    char uri[256];
    int fits = snprintf(uri, sizeof uri, "#%s", (const char *)id) < (int)sizeof uri;
    xmlFree(id);
    if (!fits) return TX_E_NO_ELEMENT;
    xmlNodePtr sig = xmlSecTmplSignatureCreateNsPref(doc, xmlSecTransformExclC14NId,
                                                     ecdsa ? xmlSecTransformEcdsaSha256Id : xmlSecTransformRsaSha256Id,
                                                     NULL, BAD_CAST "ds");
    if (!sig) return TX_E_INTERNAL;
    xmlNodePtr issuer = NULL;
    for (xmlNodePtr c = root->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE) {
            if (xmlSecCheckNodeName(c, BAD_CAST "Issuer", BAD_CAST SAML_NS)) issuer = c;
            break;
        }
    xmlNodePtr placed;
    if (issuer)
        placed = xmlAddNextSibling(issuer, sig);
    else if (root->children)
        placed = xmlAddPrevSibling(root->children, sig);
    else
        placed = xmlAddChild(root, sig);
    if (!placed) {
        xmlFreeNode(sig);
        return TX_E_INTERNAL;
    }
    xmlNodePtr ref = xmlSecTmplSignatureAddReference(sig, xmlSecTransformSha256Id, NULL, BAD_CAST uri, NULL);
    if (!ref || !xmlSecTmplReferenceAddTransform(ref, xmlSecTransformEnvelopedId) ||
        !xmlSecTmplReferenceAddTransform(ref, xmlSecTransformExclC14NId))
        return TX_E_INTERNAL;

    int rc = TX_E_INTERNAL;
    xmlSecDSigCtxPtr ctx = xmlSecDSigCtxCreate(NULL);
    if (!ctx) return TX_E_INTERNAL;
    ctx->signKey = tx_key(dummy, dummy_len, xmlSecKeyDataFormatDer);
    if (!ctx->signKey) {
        rc = TX_E_BAD_KEY;
        goto out;
    }
    ctx->flags |= XMLSEC_DSIG_FLAGS_STORE_SIGNATURE;
    if (xmlSecDSigCtxSign(ctx, sig) < 0) goto out;
    xmlSecBufferPtr b = xmlSecDSigCtxGetPreSignBuffer(ctx);
    if (!b || xmlSecBufferGetSize(b) == 0) goto out;
    xmlSecSize size = xmlSecBufferGetSize(b);
    unsigned char *copy = (unsigned char *)xmlMalloc(size);
    if (!copy) goto out;
    memcpy(copy, xmlSecBufferGetData(b), size);
    *out = copy;
    *len = size;
    rc = 0;
out:
    xmlSecDSigCtxDestroy(ctx);
    return rc;
}

/* Puts the real signature (XML-DSig form: PKCS#1 v1.5 bytes, or ECDSA r||s) into the root's
 * signature and the signing certificate (DER) into its KeyInfo (outside SignedInfo). */
int tx_set_signature(xmlDocPtr doc, const unsigned char *value, size_t value_len, const unsigned char *cert,
                     size_t cert_len) {
    tx_begin();
    int n = 0;
    xmlNodePtr sig = tx_only_child(xmlDocGetRootElement(doc), xmlSecNodeSignature, xmlSecDSigNs, &n);
    if (n != 1) return TX_E_NO_ELEMENT;
    xmlNodePtr sv = tx_only_child(sig, xmlSecNodeSignatureValue, xmlSecDSigNs, &n);
    if (n != 1) return TX_E_NO_ELEMENT;
    xmlChar *b64 = xmlSecBase64Encode(value, (xmlSecSize)value_len, 0);
    if (!b64) return TX_E_INTERNAL;
    xmlNodeSetContent(sv, b64);
    xmlFree(b64);
    xmlNodePtr ki = xmlSecTmplSignatureEnsureKeyInfo(sig, NULL);
    xmlNodePtr xd = ki ? xmlSecTmplKeyInfoAddX509Data(ki) : NULL;
    xmlNodePtr xc = xd ? xmlSecTmplX509DataAddCertificate(xd) : NULL;
    if (!xc) return TX_E_INTERNAL;
    xmlChar *cb64 = xmlSecBase64Encode(cert, (xmlSecSize)cert_len, 0);
    if (!cb64) return TX_E_INTERNAL;
    xmlNodeSetContent(xc, cb64);
    xmlFree(cb64);
    return 0;
}

/* ---------- encryption of one element for a relying party ---------- */

/* Encrypts the one element {ns}name in the document (refused if there is not exactly one)
 * for the holder of `cert` (DER): the element is replaced by an xenc:EncryptedData whose
 * content key (for `cipher`, below) travels in an EncryptedKey,
 * RSA-OAEP (mgf1p) under the certificate's RSA key: what libxmlsec1 1.2 can do (it has no
 * ECDH-ES key agreement). */
static xmlNodePtr tx_find(xmlNodePtr cur, const xmlChar *name, const xmlChar *ns, int *count) {
    xmlNodePtr found = NULL;
    for (; cur; cur = cur->next) {
        if (cur->type != XML_ELEMENT_NODE) continue;
        if (xmlSecCheckNodeName(cur, name, ns)) {
            found = cur;
            (*count)++;
        }
        xmlNodePtr inner = tx_find(cur->children, name, ns, count);
        if (inner) found = inner;
    }
    return found;
}

int tx_encrypt_element(xmlDocPtr doc, const char *ns, const char *name, const unsigned char *cert, size_t cert_len,
                       int cipher) {
    tx_begin();
    int n = 0;
    xmlNodePtr target = tx_find(xmlDocGetRootElement(doc), BAD_CAST name, BAD_CAST ns, &n);
    if (n != 1 || !target) {
        tx_note("not exactly one %s to encrypt%s", name, "");
        return TX_E_NO_ELEMENT;
    }
    /* Two contexts and no keys manager: libxmlsec1's default manager builds an X.509
     * store from the system's CA bundle whenever one is made (tens of milliseconds per
     * response), and we have the one key we need already. First the content, with a fresh
     * AES key; then that key, wrapped for the relying party's RSA key into the
     * EncryptedKey added to the result's KeyInfo. */
    int rc = TX_E_INTERNAL;
    xmlSecEncCtxPtr data_ctx = NULL, key_ctx = NULL;
    /* 0: AES-256-GCM, 1: AES-128-GCM, 2: AES-256-CBC (the mandatory one, DP section 8). */
    xmlSecTransformId alg = cipher == 1 ? xmlSecTransformAes128GcmId
                          : cipher == 2 ? xmlSecTransformAes256CbcId
                                        : xmlSecTransformAes256GcmId;
    xmlNodePtr tmpl = xmlSecTmplEncDataCreate(doc, alg, NULL, xmlSecTypeEncElement, NULL, NULL);
    if (!tmpl || !xmlSecTmplEncDataEnsureCipherValue(tmpl) || !xmlSecTmplEncDataEnsureKeyInfo(tmpl, NULL)) goto out;
    xmlSecKeyPtr rsa = tx_key(cert, cert_len, xmlSecKeyDataFormatCertDer);
    if (!rsa) {
        rc = TX_E_BAD_KEY;
        goto out;
    }
    key_ctx = xmlSecEncCtxCreate(NULL);
    if (!key_ctx) {
        xmlSecKeyDestroy(rsa);
        goto out;
    }
    key_ctx->encKey = rsa; /* owned by the context now */
    key_ctx->mode = xmlEncCtxModeEncryptedKey;
    xmlSecKeyDataPtr v = xmlSecKeyGetValue(rsa);
    if (!v || !xmlSecKeyDataCheckId(v, xmlSecKeyDataRsaId) || xmlSecKeyDataGetSize(v) < 2048) {
        tx_note("the encryption certificate's key is not RSA of 2048 bits or more%s%s", "", "");
        rc = TX_E_BAD_KEY;
        goto out;
    }
    data_ctx = xmlSecEncCtxCreate(NULL);
    if (!data_ctx) goto out;
    data_ctx->encKey = xmlSecKeyGenerate(xmlSecKeyDataAesId, cipher == 1 ? 128 : 256, xmlSecKeyDataTypeSession);
    if (!data_ctx->encKey) goto out;
    /* On success the template takes the element's place and the element is freed. */
    if (xmlSecEncCtxXmlEncrypt(data_ctx, tmpl, target) < 0) goto out;
    xmlNodePtr encrypted = tmpl;
    tmpl = NULL;
    xmlNodePtr ki = xmlSecFindChild(encrypted, xmlSecNodeKeyInfo, xmlSecDSigNs);
    xmlNodePtr ek = ki ? xmlSecTmplKeyInfoAddEncryptedKey(ki, xmlSecTransformRsaOaepId, NULL, NULL, NULL) : NULL;
    if (!ek || !xmlSecTmplEncDataEnsureCipherValue(ek)) goto out;
    xmlSecBufferPtr raw = xmlSecKeyDataBinaryValueGetBuffer(xmlSecKeyGetValue(data_ctx->encKey));
    if (!raw || xmlSecEncCtxBinaryEncrypt(key_ctx, ek, xmlSecBufferGetData(raw), xmlSecBufferGetSize(raw)) < 0)
        goto out;
    rc = 0;
out:
    if (tmpl) xmlFreeNode(tmpl);
    if (data_ctx) xmlSecEncCtxDestroy(data_ctx);
    if (key_ctx) xmlSecEncCtxDestroy(key_ctx);
    return rc;
}
